#!/usr/bin/env python3
"""What Linux's PAGEMAP_SCAN reports as dirty on an anonymous mapping.

Maps 256 pages, writes pages 0 and 10, reads page 20, and scans the way
wasmtime's pool-slot reset does:
  - 48.0.x: written, present, not the zero page, not file-backed;
  - 50.0.1: written, not the zero page, not file-backed (present dropped so
    that swapped-out dirty pages are reset too);
  - written and (present or swapped): what would find exactly the dirty
    pages, swapped ones included.
Prints the page ranges each scan returns. No root needed; Linux 6.7+.
"""
import ctypes
import os

PAGE = os.sysconf("SC_PAGE_SIZE")
N = 256
WRITTEN, FILE, PRESENT, SWAPPED, PFNZERO = 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5
PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, N * PAGE, 3, 0x22, -1, 0)  # read/write, private anonymous
mem = (ctypes.c_char * (N * PAGE)).from_address(addr)
mem[0] = b"x"
mem[10 * PAGE] = b"y"
_ = mem[20 * PAGE]


def scan(mask, inverted, anyof=0):
    regions = (ctypes.c_uint64 * (3 * 64))()
    arg = (ctypes.c_uint64 * 12)(96, 0, addr, addr + N * PAGE, 0,
                                 ctypes.addressof(regions), 64, N,
                                 inverted, mask, anyof, 0)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        n = libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg))
    finally:
        os.close(fd)
    if n < 0:
        raise OSError(ctypes.get_errno(), "PAGEMAP_SCAN")
    return [((regions[3 * i] - addr) // PAGE, (regions[3 * i + 1] - addr) // PAGE)
            for i in range(n)]


print(f"kernel {os.uname().release}; {N} pages, 0 and 10 written, 20 read")
print("48.0.x  written+present:          ",
      scan(WRITTEN | PRESENT | PFNZERO | FILE, PFNZERO | FILE))
print("50.0.1  written:                  ",
      scan(WRITTEN | PFNZERO | FILE, PFNZERO | FILE))
print("written, any of present/swapped:  ",
      scan(WRITTEN | PFNZERO | FILE, PFNZERO | FILE, PRESENT | SWAPPED))
