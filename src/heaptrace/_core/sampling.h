/* sampling.h: the arithmetic of sampled tracing.
 *
 * With a sampling interval of N bytes, the hooks (hooks.c) sample
 * allocations as a Poisson process over allocated bytes: the sample points
 * are on average N bytes apart, and a block of s bytes is recorded when at
 * least one point falls inside it, which happens with probability
 *     p(s) = 1 - exp(-s / N).
 * A recorded block therefore stands for 1 / p(s) blocks and s / p(s) bytes
 * (Horvitz-Thompson): sums of those weights over the recorded blocks are
 * unbiased estimates of the live blocks and bytes.  An interval of 0 means
 * exact tracing, where every weight is 1 block and s bytes.
 *
 * A block of 0 bytes is weighted as one of 1 byte (the hooks never sample it,
 * but track() can record one), so that no weight is infinite.
 *
 * Plain C11 and libm (exp/expm1, which never allocate): used by the hooks'
 * tables, the analysis and the C tests alike.
 */
#ifndef HT_SAMPLING_H
#define HT_SAMPLING_H

#include <math.h>
#include <stdint.h>

/* The largest interval start() accepts (1 TiB): large enough for any use,
 * small enough that a countdown (interval times at most ~37, the largest
 * value of -log(u) for a 53-bit u) fits in an int64_t. */
#define HT_SAMPLE_MAX_INTERVAL ((uint64_t)1 << 40)

/* Probability that a block of size bytes is sampled at interval (> 0). */
static inline double
ht_sample_prob(uint64_t size, uint64_t interval)
{
    double s = size ? (double)size : 1.0;
    return -expm1(-s / (double)interval);
}

/* Estimated bytes a recorded block of size bytes stands for, rounded to the
 * nearest byte; size itself when interval is 0 (exact). */
static inline uint64_t
ht_sample_bytes(uint64_t size, uint64_t interval)
{
    if (interval == 0) {
        return size;
    }
    return (uint64_t)llround((double)size / ht_sample_prob(size, interval));
}

/* Estimated number of blocks a recorded block of size bytes stands for
 * (not rounded); 1 when interval is 0. */
static inline double
ht_sample_blocks(uint64_t size, uint64_t interval)
{
    if (interval == 0) {
        return 1.0;
    }
    return 1.0 / ht_sample_prob(size, interval);
}

#endif /* HT_SAMPLING_H */
