#!/usr/bin/env python3
"""Embeds text files into the library as NUL-terminated byte arrays (build step run by Meson).

Usage: embed_files.py OUTPUT.c HEADER TYPE TABLE INPUT...
Writes `const TYPE TABLE[]` with one {"file name", text} entry per input and
`const size_t TABLE_count`, including HEADER for TYPE. Byte arrays rather than string literals:
C11 caps string literals at 4095 characters. Used for the OpenCL sources (cl/) and the
built-in tuning files (tuning/).
"""
import os
import sys


def c_bytes(data):
    items = [str(b) for b in data] + ["0"]
    return "\n".join("    " + ", ".join(items[i:i + 24]) + "," for i in range(0, len(items), 24))


def main():
    output, header, type_name, table_name, inputs = (sys.argv[1], sys.argv[2], sys.argv[3],
                                                     sys.argv[4], sys.argv[5:])
    parts = [f'#include "{header}"', ""]
    table = []
    for index, path in enumerate(inputs):
        with open(path, "rb") as source:
            data = source.read()
        parts.append(f"static const char file_{index}[] = {{")
        parts.append(c_bytes(data))
        parts.append("};")
        table.append(f'    {{"{os.path.basename(path)}", file_{index}}},')
    if not table:
        table.append("    {NULL, NULL},")  # C has no empty arrays; the count stays 0
    parts.append("")
    parts.append(f"const {type_name} {table_name}[] = {{")
    parts.extend(table)
    parts.append("};")
    parts.append(f"const size_t {table_name}_count = {len(inputs)};")
    with open(output, "w") as out:
        out.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
