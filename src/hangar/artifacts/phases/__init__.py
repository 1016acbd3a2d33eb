"""The build of one version, as phases run in order (a hash first, so a cached build skips the rest).

hashing   source entries + runtime + interpreter + SDK  ->  content hash (and each file's digest)
unpack    source  ->  <tmp>/code, every file checked against its digest, links checked on disk
resolve   code dir  ->  which requirements to install, which SDK dependencies are still missing
install   uv venv + uv pip install, then hangar.sdk copied in
finalize  entry point checked, bytecode compiled, everything read-only, atomic rename into place
"""
