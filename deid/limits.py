"""Process-wide limits the host application may set before deid.pixels is imported (this
module imports nothing, so setting them does not load pydicom and numpy)."""

# Longest a child may take for one frame (the first frame includes its start-up);
# deid.pixels.DECODE_TIMEOUT_SECONDS starts from this value when it is imported.
DECODE_TIMEOUT_SECONDS = 30.0
