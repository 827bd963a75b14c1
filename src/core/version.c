/* Run-time version, to catch a header/library mismatch. */
#include "pbsattn.h"

unsigned pbsa_version_number(void) { return PBSA_VERSION_NUMBER; }

const char *pbsa_version_string(void)
{
#define PBSA_STR2(x) #x
#define PBSA_STR(x) PBSA_STR2(x)
    return PBSA_STR(PBSA_VERSION_MAJOR) "." PBSA_STR(PBSA_VERSION_MINOR) "." PBSA_STR(
        PBSA_VERSION_PATCH);
}
