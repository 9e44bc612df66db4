"""`heaptrace run -m servicepkg`: prints its arguments and leaks briefly."""
import sys

kept = [bytearray(1000) for _ in range(100)]
print("servicepkg args:", " ".join(sys.argv[1:]))
