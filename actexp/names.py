"""What a config's name (and so a run or sweep folder name) may hold: config validates names with
it, varying makes names from values with it."""

import re

NAME_CHARS = "A-Za-z0-9_.,=+-"
# \A...\Z, not ^...$: `$` also matches before a trailing newline, which would let "evil\n" through.
NAME_PATTERN = re.compile(rf"\A[{NAME_CHARS}]+\Z")
MAX_NAME_LENGTH = 200  # a run name is a folder name; file systems stop at 255 bytes
