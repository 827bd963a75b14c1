/* The PTX rewrite behind the Hopper tiles: plain text processing, no OpenCL. */
#include "launch/ptx_sm90a.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The ".target sm_90" directive of ptx: at the start of a line (after blanks), target exactly
 * sm_90 (not sm_90a nor sm_900). Returns where "sm_90" starts, or NULL. */
static const char *find_target(const char *ptx)
{
    static const char directive[] = ".target";
    for (const char *at = strstr(ptx, directive); at; at = strstr(at + 1, directive)) {
        const char *line = at;
        while (line > ptx && (line[-1] == ' ' || line[-1] == '\t'))
            line--;
        if (line > ptx && line[-1] != '\n')
            continue;
        const char *name = at + sizeof directive - 1;
        if (*name != ' ' && *name != '\t')
            continue;
        while (*name == ' ' || *name == '\t')
            name++;
        const char after = name[5];
        if (strncmp(name, "sm_90", 5) == 0 && (after == ',' || after == ' ' || after == '\t' ||
                                               after == '\n' || after == '\r' || after == '\0'))
            return name;
    }
    return NULL;
}

/* Copies text[0, length) to *w without the markers; returns how many it dropped. */
static size_t copy_unmarked(char **w, const char *text, size_t length)
{
    const size_t marker_length = strlen(PBSA_SM90A_MARKER);
    size_t dropped = 0;
    for (size_t i = 0; i < length;) {
        if (length - i >= marker_length &&
            memcmp(text + i, PBSA_SM90A_MARKER, marker_length) == 0) {
            i += marker_length;
            dropped++;
        } else {
            *(*w)++ = text[i++];
        }
    }
    return dropped;
}

char *pbsa_ptx_sm90a(const char *ptx, size_t *markers)
{
    *markers = 0;
    const char *target = find_target(ptx);
    if (!target)
        return NULL;
    /* The result is at most one byte longer ("a"); markers only shrink it. */
    const size_t length = strlen(ptx), head = (size_t)(target - ptx) + 5;
    char *out = malloc(length + 2);
    if (!out)
        return NULL;
    char *w = out;
    *markers = copy_unmarked(&w, ptx, head);
    *w++ = 'a';
    *markers += copy_unmarked(&w, ptx + head, length - head);
    *w = '\0';
    return out;
}
