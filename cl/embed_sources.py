#!/usr/bin/env python3
"""Embeds OpenCL C sources into the library as NUL-terminated byte arrays.

Usage: embed_sources.py OUTPUT.c INPUT.cl...
Each input becomes an entry {"file.cl", bytes} of pbsa_kernel_sources[] (see src/kernel_source.h).
Byte arrays rather than string literals: C11 caps string literals at 4095 characters.
"""
import os
import sys


def c_bytes(data):
    items = [str(b) for b in data] + ["0"]
    lines = []
    for start in range(0, len(items), 24):
        lines.append("    " + ", ".join(items[start:start + 24]) + ",")
    return "\n".join(lines)


def main():
    output, inputs = sys.argv[1], sys.argv[2:]
    parts = ['#include "kernel_source.h"', ""]
    table = []
    for index, path in enumerate(inputs):
        with open(path, "rb") as source:
            data = source.read()
        parts.append(f"static const char source_{index}[] = {{")
        parts.append(c_bytes(data))
        parts.append("};")
        table.append(f'    {{"{os.path.basename(path)}", source_{index}}},')
    parts.append("")
    parts.append("const pbsa_kernel_source pbsa_kernel_sources[] = {")
    parts.extend(table)
    parts.append("};")
    parts.append(f"const size_t pbsa_kernel_source_count = {len(inputs)};")
    with open(output, "w") as out:
        out.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
