#!/usr/bin/env python3
"""Embeds the tuning files of this folder into the library as NUL-terminated byte arrays.

Usage: embed_tuning.py OUTPUT.c INPUT.txt...
Each input becomes an entry {"name.txt", text} of pbsa_builtin_tuning[] (see src/tuning.h); the
library parses them with the same parser as users' tuning files when a context is created. An
input whose first statement is not the version line fails the build (the unit test
tuning_file checks every built-in file completely).
"""
import os
import sys


def c_bytes(data):
    items = [str(b) for b in data] + ["0"]
    return "\n".join("    " + ", ".join(items[i:i + 24]) + "," for i in range(0, len(items), 24))


def check(path, data):
    for line in data.decode("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] != "pbsattn-tuning":
            sys.exit(f"{path}: not a pbsattn tuning file (first statement: {line[:40]!r})")
        return
    sys.exit(f"{path}: empty tuning file")


def main():
    output, inputs = sys.argv[1], sys.argv[2:]
    parts = ['#include "tuning.h"', ""]
    table = []
    for index, path in enumerate(inputs):
        with open(path, "rb") as source:
            data = source.read()
        check(path, data)
        parts.append(f"static const char tuning_{index}[] = {{")
        parts.append(c_bytes(data))
        parts.append("};")
        table.append(f'    {{"{os.path.basename(path)}", tuning_{index}}},')
    parts.append("")
    if not table:
        table.append("    {NULL, NULL},")
    parts.append("const pbsa_tuning_text pbsa_builtin_tuning[] = {")
    parts.extend(table)
    parts.append("};")
    parts.append(f"const size_t pbsa_builtin_tuning_count = {len(inputs)};")
    with open(output, "w") as out:
        out.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
