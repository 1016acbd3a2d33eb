"""Size limits of code artifacts (AgentCore's own: 250 MB zipped, 750 MB unpacked) and of what we accept from a zip."""

from __future__ import annotations

MB = 1000 * 1000  # AWS states these limits in decimal megabytes

MAX_ZIPPED_BYTES = 250 * MB  # one uploaded object, and one zip artifact
MAX_UNPACKED_BYTES = 750 * MB  # everything a code artifact unpacks to (files only, not the environment)
MAX_FILES = 100_000  # entries of one artifact; far above any real agent, far below an inode flood
# A member that inflates more than this much is treated as a zip bomb, once it is big enough to matter.
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_MIN_BYTES = 16 * 1024 * 1024
