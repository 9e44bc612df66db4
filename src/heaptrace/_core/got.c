/* got.c: the GOT patching engine.  The invariants are in got.h.
 *
 * A pass (patch or unpatch) runs under got_lock in three steps:
 *   1. list the loaded objects (dl_iterate_phdr), copying base and name;
 *   2. pin each with dlopen(name, RTLD_NOLOAD): this waits for a dlopen in
 *      progress elsewhere, and keeps the object mapped; an object that does
 *      not answer, or answers with another base, is left out;
 *   3. walk the objects again (dl_iterate_phdr) and, for the pinned ones,
 *      read PT_DYNAMIC, walk DT_JMPREL and DT_RELA, and act on every
 *      JUMP_SLOT / GLOB_DAT relocation whose symbol is hooked.
 * Every address read from an object's tables is checked to lie inside one
 * of its PT_LOAD segments first, so an odd or truncated ELF is skipped, not
 * followed.
 */
#define _GNU_SOURCE
#include "got.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__linux__) && defined(__GLIBC__) && defined(__x86_64__)
#  define HT_GOT_SUPPORTED 1
#  define HT_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#  define HT_R_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__linux__) && defined(__GLIBC__) && defined(__aarch64__)
#  define HT_GOT_SUPPORTED 1
#  define HT_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#  define HT_R_GLOB_DAT R_AARCH64_GLOB_DAT
#else
#  define HT_GOT_SUPPORTED 0
#endif

/* One patched slot: where, what it held before, in which object (its load
 * base, to tell a reloaded object from the one patched), for which hook. */
struct ht_got_record {
    uintptr_t slot;
    uintptr_t saved;
    uintptr_t base;
    size_t hook;
};

#define MAX_SETS 8

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;

#if HT_GOT_SUPPORTED

static ht_got_set *sets[MAX_SETS];          /* got_lock; [0] is dl_set */
static size_t nclients;                     /* got_lock: installed sets but dl_set */

/* Set by a dlopen that found got_lock busy; the holder runs a patch pass
 * before it lets go (see got_unlock).  Atomic: read and written without
 * the lock. */
static _Atomic int pending;

/* Depth of hook_dlopen calls on this thread: only the outermost patches. */
static _Thread_local int dlopen_depth;

/* The real dlopen: written under got_lock before the first slot points to
 * hook_dlopen, never cleared, so a late caller of the hook still finds it. */
static void *(*real_dlopen)(const char *, int);

static void *hook_dlopen(const char *file, int mode);

static ht_got_hook dl_hooks[] = {
    {"dlopen", (void *)hook_dlopen, (void **)&real_dlopen},
};
/* heaptrace's own object, found by an address inside it, is not patched for
 * dlopen: its own calls (the pins below, the retry in hook_dlopen) must
 * reach the real function. */
static const void *const dl_skip[] = {(const void *)&got_lock};
static ht_got_set dl_set = HT_GOT_SET_INIT(dl_hooks, 1, dl_skip, 1);   /* got_lock */

/* ---- objects --------------------------------------------------------------- */

typedef struct {
    uintptr_t base;
    char *name;         /* malloc'ed copy of dlpi_name ("" for the program) */
    void *handle;       /* the pin; NULL when left out */
} obj_entry;

typedef struct {
    obj_entry *v;
    size_t n, cap;
    int oom;
} obj_list;

/* The geometry of one object, read from its program headers. */
typedef struct {
    uintptr_t base;
    const ElfW(Phdr) *phdr;
    size_t phnum;
    const ElfW(Phdr) *dynamic;
    const ElfW(Phdr) *relro;
    uintptr_t span;     /* end of the highest PT_LOAD, relative to base */
} obj_geom;

static void
geom_read(obj_geom *g, const struct dl_phdr_info *info)
{
    memset(g, 0, sizeof(*g));
    g->base = (uintptr_t)info->dlpi_addr;
    g->phdr = info->dlpi_phdr;
    g->phnum = info->dlpi_phnum;
    for (size_t i = 0; g->phdr != NULL && i < g->phnum; i++) {
        const ElfW(Phdr) *p = &g->phdr[i];
        if (p->p_type == PT_LOAD && p->p_vaddr + p->p_memsz > g->span) {
            g->span = p->p_vaddr + p->p_memsz;
        } else if (p->p_type == PT_DYNAMIC) {
            g->dynamic = p;
        } else if (p->p_type == PT_GNU_RELRO) {
            g->relro = p;
        }
    }
}

/* The PT_LOAD segment holding [addr, addr + len), or NULL. */
static const ElfW(Phdr) *
geom_segment(const obj_geom *g, uintptr_t addr, size_t len)
{
    for (size_t i = 0; i < g->phnum; i++) {
        const ElfW(Phdr) *p = &g->phdr[i];
        if (p->p_type != PT_LOAD) {
            continue;
        }
        uintptr_t lo = g->base + p->p_vaddr;
        uintptr_t hi = lo + p->p_memsz;
        if (addr >= lo && addr <= hi && len <= hi - addr) {
            return p;
        }
    }
    return NULL;
}

/* A pointer from the dynamic section, as an address inside the object, or
 * 0.  glibc rewrites these to absolute addresses for most objects but not
 * for all (the vDSO, read-only dynamic sections), so both readings are
 * tried. */
static uintptr_t
geom_pointer(const obj_geom *g, uintptr_t v, size_t len)
{
    if (geom_segment(g, v, len) != NULL) {
        return v;
    }
    if (geom_segment(g, v + g->base, len) != NULL) {
        return v + g->base;
    }
    return 0;
}

static int
geom_contains_any(const obj_geom *g, const void *const *addrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (geom_segment(g, (uintptr_t)addrs[i], 1) != NULL) {
            return 1;
        }
    }
    return 0;
}

static int
is_vdso(const obj_geom *g)
{
    uintptr_t vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    return vdso != 0 && geom_segment(g, vdso, 1) != NULL;
}

static int
collect_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    obj_list *l = data;
    obj_geom g;
    geom_read(&g, info);
    if (is_vdso(&g) || g.dynamic == NULL) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        obj_entry *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    char *copy = strdup(name);
    if (copy == NULL) {
        l->oom = 1;
        return 1;
    }
    l->v[l->n].base = g.base;
    l->v[l->n].name = copy;
    l->v[l->n].handle = NULL;
    l->n++;
    return 0;
}

static void
objs_free(obj_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].handle != NULL) {
            dlclose(l->v[i].handle);
        }
        free(l->v[i].name);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static void
objs_pin(obj_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        obj_entry *o = &l->v[i];
        void *h = dlopen(o->name[0] ? o->name : NULL, RTLD_LAZY | RTLD_NOLOAD);
        if (h == NULL) {
            (void)dlerror();   /* leave no message behind for the caller */
            continue;
        }
        struct link_map *lm = NULL;
        if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL
            || (uintptr_t)lm->l_addr != o->base) {
            (void)dlerror();
            dlclose(h);
            continue;
        }
        o->handle = h;
    }
}

/* ---- slots ----------------------------------------------------------------- */

enum { PASS_PATCH, PASS_UNPATCH };

typedef struct {
    int mode;
    ht_got_set *only;       /* UNPATCH: the set to put back */
    obj_list *objs;
    long count;             /* slots changed */
    int failed;
    char *err;              /* first failure */
    size_t errlen;
} pass_ctx;

static void
fail(pass_ctx *c, const char *fmt, const char *a, int e)
{
    if (!c->failed) {
        snprintf(c->err, c->errlen, fmt, a, strerror(e));
    }
    c->failed = 1;
}

static int
prot_of(const ElfW(Phdr) *seg)
{
    return ((seg->p_flags & PF_R) ? PROT_READ : 0)
           | ((seg->p_flags & PF_W) ? PROT_WRITE : 0)
           | ((seg->p_flags & PF_X) ? PROT_EXEC : 0);
}

/* Store value into slot, making its page writable for the store if the
 * dynamic linker made it read-only.  0, or -1 with errno set. */
static int
write_slot(const obj_geom *g, uintptr_t slot, uintptr_t value)
{
    const ElfW(Phdr) *seg = geom_segment(g, slot, sizeof(uintptr_t));
    uintptr_t page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    int in_relro = 0;
    if (g->relro != NULL) {
        uintptr_t lo = (g->base + g->relro->p_vaddr) & ~(page_size - 1);
        uintptr_t hi = (g->base + g->relro->p_vaddr + g->relro->p_memsz) & ~(page_size - 1);
        in_relro = slot >= lo && slot < hi;
    }
    if (seg == NULL) {
        errno = EFAULT;
        return -1;
    }
    if (!in_relro && (seg->p_flags & PF_W)) {
        __atomic_store_n((uintptr_t *)slot, value, __ATOMIC_SEQ_CST);
        return 0;
    }
    int prot = in_relro ? PROT_READ : prot_of(seg);
    void *page = (void *)(slot & ~(page_size - 1));
    if (mprotect(page, page_size, prot | PROT_WRITE) != 0) {
        return -1;
    }
    __atomic_store_n((uintptr_t *)slot, value, __ATOMIC_SEQ_CST);
    if (mprotect(page, page_size, prot) != 0) {
        return -1;
    }
    return 0;
}

static struct ht_got_record *
find_record(ht_got_set *s, uintptr_t slot)
{
    for (size_t i = 0; i < s->nrecords; i++) {
        if (s->records[i].slot == slot) {
            return &s->records[i];
        }
    }
    return NULL;
}

static void
patch_slot(pass_ctx *c, const obj_geom *g, ht_got_set *s, size_t hook, uintptr_t slot)
{
    uintptr_t repl = (uintptr_t)s->hooks[hook].replacement;
    uintptr_t cur = __atomic_load_n((uintptr_t *)slot, __ATOMIC_ACQUIRE);
    if (cur == repl) {
        return;     /* patched by an earlier pass */
    }
    if (cur == 0 || (g->base != 0 && cur < g->span)) {
        return;     /* a link-time value: the object is not relocated yet */
    }
    struct ht_got_record *r = find_record(s, slot);
    if (r == NULL) {
        if (s->nrecords == s->caprecords) {
            size_t cap = s->caprecords ? 2 * s->caprecords : 16;
            struct ht_got_record *v = realloc(s->records, cap * sizeof(*v));
            if (v == NULL) {
                fail(c, "heaptrace: out of memory recording the slot of %s (%s)",
                     s->hooks[hook].symbol, ENOMEM);
                return;
            }
            s->records = v;
            s->caprecords = cap;
        }
        r = &s->records[s->nrecords++];
    }
    r->slot = slot;
    r->saved = cur;
    r->base = g->base;
    r->hook = hook;
    if (write_slot(g, slot, repl) != 0) {
        fail(c, "heaptrace: cannot redirect %s: mprotect failed: %s",
             s->hooks[hook].symbol, errno);
        *r = s->records[--s->nrecords];
        return;
    }
    c->count++;
}

static void
unpatch_slot(pass_ctx *c, const obj_geom *g, ht_got_set *s, size_t hook, uintptr_t slot)
{
    uintptr_t repl = (uintptr_t)s->hooks[hook].replacement;
    if (__atomic_load_n((uintptr_t *)slot, __ATOMIC_ACQUIRE) != repl) {
        return;     /* not ours, or rewritten by someone else since */
    }
    struct ht_got_record *r = find_record(s, slot);
    uintptr_t value;
    if (r != NULL && r->base == g->base) {
        value = r->saved;
    } else {
        value = (uintptr_t)*s->hooks[hook].original;
    }
    if (value == 0) {
        return;
    }
    if (write_slot(g, slot, value) != 0) {
        fail(c, "heaptrace: cannot restore %s: mprotect failed: %s",
             s->hooks[hook].symbol, errno);
        return;
    }
    c->count++;
}

/* Act on one relocation naming sym_name. */
static void
on_symbol(pass_ctx *c, const obj_geom *g, const unsigned char *skipped,
          const char *name, size_t room, uintptr_t slot)
{
    for (size_t k = 0; k < MAX_SETS; k++) {
        ht_got_set *s = sets[k];
        if (s == NULL || skipped[k] || (c->mode == PASS_UNPATCH && s != c->only)) {
            continue;
        }
        for (size_t h = 0; h < s->nhooks; h++) {
            size_t len = strlen(s->hooks[h].symbol);
            if (len < room && memcmp(name, s->hooks[h].symbol, len + 1) == 0) {
                if (c->mode == PASS_PATCH) {
                    patch_slot(c, g, s, h, slot);
                } else {
                    unpatch_slot(c, g, s, h, slot);
                }
            }
        }
    }
}

typedef struct {
    uintptr_t symtab, strtab;
    size_t strsz, syment;
    uintptr_t jmprel;
    size_t pltrelsz;
    long pltrel;
    uintptr_t rela;
    size_t relasz, relaent;
} dyn_info;

static int
read_dynamic(const obj_geom *g, dyn_info *d)
{
    memset(d, 0, sizeof(*d));
    d->syment = sizeof(ElfW(Sym));
    d->relaent = sizeof(ElfW(Rela));
    d->pltrel = DT_RELA;
    uintptr_t at = g->base + g->dynamic->p_vaddr;
    size_t n = g->dynamic->p_memsz / sizeof(ElfW(Dyn));
    if (n == 0 || geom_segment(g, at, n * sizeof(ElfW(Dyn))) == NULL) {
        return -1;
    }
    const ElfW(Dyn) *dyn = (const ElfW(Dyn) *)at;
    for (size_t i = 0; i < n && dyn[i].d_tag != DT_NULL; i++) {
        uintptr_t v = (uintptr_t)dyn[i].d_un.d_ptr;
        switch (dyn[i].d_tag) {
        case DT_SYMTAB: d->symtab = v; break;
        case DT_STRTAB: d->strtab = v; break;
        case DT_STRSZ: d->strsz = (size_t)v; break;
        case DT_SYMENT: d->syment = (size_t)v; break;
        case DT_JMPREL: d->jmprel = v; break;
        case DT_PLTRELSZ: d->pltrelsz = (size_t)v; break;
        case DT_PLTREL: d->pltrel = (long)v; break;
        case DT_RELA: d->rela = v; break;
        case DT_RELASZ: d->relasz = (size_t)v; break;
        case DT_RELAENT: d->relaent = (size_t)v; break;
        default: break;
        }
    }
    if (d->symtab == 0 || d->strtab == 0 || d->strsz == 0
        || d->syment != sizeof(ElfW(Sym)) || d->relaent != sizeof(ElfW(Rela))) {
        return -1;
    }
    d->strtab = geom_pointer(g, d->strtab, d->strsz);
    d->symtab = geom_pointer(g, d->symtab, sizeof(ElfW(Sym)));
    if (d->strtab == 0 || d->symtab == 0) {
        return -1;
    }
    return 0;
}

static void
walk_relocations(pass_ctx *c, const obj_geom *g, const unsigned char *skipped,
                 const dyn_info *d, uintptr_t table, size_t bytes)
{
    if (table == 0 || bytes == 0) {
        return;
    }
    table = geom_pointer(g, table, bytes);
    if (table == 0) {
        return;
    }
    const ElfW(Rela) *rel = (const ElfW(Rela) *)table;
    size_t n = bytes / sizeof(ElfW(Rela));
    for (size_t i = 0; i < n; i++) {
        unsigned long type = ELF64_R_TYPE(rel[i].r_info);
        if ((type != HT_R_JUMP_SLOT && type != HT_R_GLOB_DAT) || rel[i].r_addend != 0) {
            continue;
        }
        size_t symi = ELF64_R_SYM(rel[i].r_info);
        uintptr_t symaddr = d->symtab + symi * sizeof(ElfW(Sym));
        if (symi == 0 || symaddr < d->symtab
            || geom_segment(g, symaddr, sizeof(ElfW(Sym))) == NULL) {
            continue;
        }
        const ElfW(Sym) *sym = (const ElfW(Sym) *)symaddr;
        if (sym->st_name == 0 || sym->st_name >= d->strsz) {
            continue;
        }
        uintptr_t slot = g->base + rel[i].r_offset;
        if ((slot & (sizeof(uintptr_t) - 1)) != 0
            || geom_segment(g, slot, sizeof(uintptr_t)) == NULL) {
            continue;
        }
        on_symbol(c, g, skipped, (const char *)(d->strtab + sym->st_name),
                  d->strsz - sym->st_name, slot);
    }
}

static int
process_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    pass_ctx *c = data;
    obj_geom g;
    geom_read(&g, info);
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    int pinned = 0;
    for (size_t i = 0; i < c->objs->n; i++) {
        obj_entry *o = &c->objs->v[i];
        if (o->handle != NULL && o->base == g.base && strcmp(o->name, name) == 0) {
            pinned = 1;
            break;
        }
    }
    if (!pinned || g.dynamic == NULL) {
        return 0;
    }
    unsigned char skipped[MAX_SETS];
    int any = 0;
    for (size_t k = 0; k < MAX_SETS; k++) {
        skipped[k] = sets[k] == NULL || geom_contains_any(&g, sets[k]->skip, sets[k]->nskip);
        any |= !skipped[k];
    }
    dyn_info d;
    if (!any || read_dynamic(&g, &d) < 0) {
        return 0;
    }
    if (d.pltrel == DT_RELA) {
        walk_relocations(c, &g, skipped, &d, d.jmprel, d.pltrelsz);
    }
    walk_relocations(c, &g, skipped, &d, d.rela, d.relasz);
    return 0;
}

/* One pass over every loaded object.  got_lock held.  Returns the number
 * of slots changed, or -1 with err filled (the pass still did what it
 * could). */
static long
run_pass(int mode, ht_got_set *only, char *err, size_t errlen)
{
    obj_list objs = {0};
    pass_ctx c = {mode, only, &objs, 0, 0, err, errlen};
    dl_iterate_phdr(collect_cb, &objs);
    if (objs.oom) {
        objs_free(&objs);
        snprintf(err, errlen, "heaptrace: out of memory listing the loaded objects");
        return -1;
    }
    objs_pin(&objs);
    dl_iterate_phdr(process_cb, &c);
    objs_free(&objs);
    return c.failed ? -1 : c.count;
}

static long
patch_new_locked(void)
{
    if (!dl_set.installed) {
        return 0;       /* nothing installed: a late dlopen hook call */
    }
    char err[sizeof(dl_set.error)];
    err[0] = 0;
    long n = run_pass(PASS_PATCH, NULL, err, sizeof(err));
    if (n < 0) {
        for (size_t k = 0; k < MAX_SETS; k++) {
            if (sets[k] != NULL) {
                memcpy(sets[k]->error, err, sizeof(err));
            }
        }
    }
    return n;
}

/* Let go of got_lock, serving the patch requests dlopen left meanwhile. */
static void
got_unlock(void)
{
    for (;;) {
        pthread_mutex_unlock(&got_lock);
        if (!atomic_load(&pending) || pthread_mutex_trylock(&got_lock) != 0) {
            return;
        }
        atomic_store(&pending, 0);
        (void)patch_new_locked();
    }
}

/* ---- dlopen ------------------------------------------------------------------ */

/* file was not found from heaptrace: look for it in the search path of the
 * object that called dlopen (its DT_RPATH/DT_RUNPATH, $ORIGIN expanded). */
static void *
retry_from_caller(const char *file, int mode, void *caller)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (caller == NULL || !dladdr1(caller, &info, (void **)&lm, RTLD_DL_LINKMAP) || lm == NULL) {
        return NULL;
    }
    void *self = real_dlopen(lm->l_name && lm->l_name[0] ? lm->l_name : NULL,
                             RTLD_LAZY | RTLD_NOLOAD);
    if (self == NULL) {
        return NULL;
    }
    void *h = NULL;
    Dl_serinfo head;
    if (dlinfo(self, RTLD_DI_SERINFOSIZE, &head) == 0 && head.dls_size >= sizeof(head)) {
        Dl_serinfo *si = malloc(head.dls_size);
        if (si != NULL) {
            si->dls_size = head.dls_size;
            si->dls_cnt = head.dls_cnt;
            if (dlinfo(self, RTLD_DI_SERINFO, si) == 0) {
                char path[PATH_MAX];
                for (unsigned int i = 0; h == NULL && i < si->dls_cnt; i++) {
                    const char *dir = si->dls_serpath[i].dls_name;
                    int w = snprintf(path, sizeof(path), "%s/%s", dir, file);
                    if (w > 0 && (size_t)w < sizeof(path)) {
                        h = real_dlopen(path, mode);
                    }
                }
            }
            free(si);
        }
    }
    dlclose(self);
    return h;
}

static void *
hook_dlopen(const char *file, int mode)
{
    void *caller = __builtin_return_address(0);
    dlopen_depth++;
    void *h = real_dlopen(file, mode);
    if (h == NULL && file != NULL && strchr(file, '/') == NULL) {
        h = retry_from_caller(file, mode, caller);
        if (h == NULL) {
            /* Leave the first attempt's message for dlerror(). */
            (void)real_dlopen(file, mode);
        }
    }
    dlopen_depth--;
    if (h != NULL && dlopen_depth == 0) {
        atomic_store(&pending, 1);
        if (pthread_mutex_trylock(&got_lock) == 0) {
            atomic_store(&pending, 0);
            (void)patch_new_locked();
            got_unlock();
        }
    }
    return h;
}

/* ---- sets ------------------------------------------------------------------- */

static int
register_set(ht_got_set *set)
{
    for (size_t k = 0; k < MAX_SETS; k++) {
        if (sets[k] == NULL) {
            sets[k] = set;
            return 0;
        }
    }
    return -1;
}

static void
unregister_set(ht_got_set *set)
{
    for (size_t k = 0; k < MAX_SETS; k++) {
        if (sets[k] == set) {
            sets[k] = NULL;
        }
    }
    free(set->records);
    set->records = NULL;
    set->nrecords = set->caprecords = 0;
    set->installed = 0;
}

static void
drop_dl_set_if_unused(void)
{
    if (nclients == 0 && dl_set.installed) {
        (void)run_pass(PASS_UNPATCH, &dl_set, dl_set.error, sizeof(dl_set.error));
        unregister_set(&dl_set);
    }
}

static const char *
conflict(const ht_got_set *set)
{
    for (size_t k = 0; k < MAX_SETS; k++) {
        if (sets[k] == NULL || sets[k] == set) {
            continue;
        }
        for (size_t i = 0; i < set->nhooks; i++) {
            for (size_t j = 0; j < sets[k]->nhooks; j++) {
                if (strcmp(set->hooks[i].symbol, sets[k]->hooks[j].symbol) == 0) {
                    return set->hooks[i].symbol;
                }
            }
        }
    }
    return NULL;
}

int
ht_got_install(ht_got_set *set)
{
    set->error[0] = 0;
    pthread_mutex_lock(&got_lock);
    if (set->installed) {
        int rc = patch_new_locked() < 0 ? -1 : (int)set->nrecords;
        got_unlock();
        return rc;
    }
    const char *clash = conflict(set);
    if (clash != NULL) {
        snprintf(set->error, sizeof(set->error),
                 "heaptrace: %s is already redirected by another hook set", clash);
        got_unlock();
        return -1;
    }
    if (!dl_set.installed) {
        real_dlopen = (void *(*)(const char *, int))dlsym(RTLD_DEFAULT, "dlopen");
        if (real_dlopen == NULL || register_set(&dl_set) < 0) {
            snprintf(set->error, sizeof(set->error),
                     "heaptrace: cannot find the dynamic linker's dlopen");
            got_unlock();
            return -1;
        }
        dl_set.installed = 1;
    }
    for (size_t i = 0; i < set->nhooks; i++) {
        *set->hooks[i].original = dlsym(RTLD_DEFAULT, set->hooks[i].symbol);
    }
    (void)dlerror();
    if (register_set(set) < 0) {
        snprintf(set->error, sizeof(set->error), "heaptrace: too many hook sets");
        drop_dl_set_if_unused();
        got_unlock();
        return -1;
    }
    set->installed = 1;
    nclients++;
    if (patch_new_locked() < 0) {
        char why[sizeof(set->error)];
        memcpy(why, set->error, sizeof(why));
        (void)run_pass(PASS_UNPATCH, set, set->error, sizeof(set->error));
        unregister_set(set);
        nclients--;
        drop_dl_set_if_unused();
        memcpy(set->error, why, sizeof(why));
        got_unlock();
        return -1;
    }
    int n = (int)set->nrecords;
    got_unlock();
    return n;
}

int
ht_got_uninstall(ht_got_set *set)
{
    pthread_mutex_lock(&got_lock);
    if (!set->installed) {
        got_unlock();
        return 0;
    }
    set->error[0] = 0;
    long n = run_pass(PASS_UNPATCH, set, set->error, sizeof(set->error));
    unregister_set(set);
    nclients--;
    drop_dl_set_if_unused();
    got_unlock();
    return n < 0 ? -1 : (int)n;
}

int
ht_got_patch_new(void)
{
    pthread_mutex_lock(&got_lock);
    long n = patch_new_locked();
    got_unlock();
    return n < 0 ? -1 : (int)n;
}

#else  /* !HT_GOT_SUPPORTED */

int
ht_got_install(ht_got_set *set)
{
    set->installed = 0;
    snprintf(set->error, sizeof(set->error),
             "heaptrace: redirecting calls needs Linux with glibc on x86-64 or aarch64");
    return -1;
}

int
ht_got_uninstall(ht_got_set *set)
{
    (void)set;
    return 0;
}

int
ht_got_patch_new(void)
{
    return 0;
}

#endif /* HT_GOT_SUPPORTED */

size_t
ht_got_status(ht_got_set *set, char *err, size_t errlen)
{
    pthread_mutex_lock(&got_lock);
    size_t n = set->installed ? set->nrecords : 0;
    if (errlen > 0) {
        snprintf(err, errlen, "%s", set->error);
    }
    pthread_mutex_unlock(&got_lock);
    return n;
}

/* ---- fork -------------------------------------------------------------------- */

static void fork_prepare(void) { pthread_mutex_lock(&got_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&got_lock); }
static void fork_child(void) { pthread_mutex_unlock(&got_lock); }

int
ht_got_init_once(void)
{
    static int done;    /* written once, at module import, under the GIL */
    if (done) {
        return 0;
    }
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) {
        return -1;
    }
    done = 1;
    return 0;
}
