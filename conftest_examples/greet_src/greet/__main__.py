import sys

from greet import greet

print(greet(" ".join(sys.argv[1:]) or "world"))
