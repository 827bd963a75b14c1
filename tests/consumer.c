/* A minimal program built against an installed pbsattn (see install_test.sh): the header and the
 * library it links must be the same version. */
#include <pbsattn.h>

#include <stdio.h>

int main(void)
{
    if (pbsa_version_number() != PBSA_VERSION_NUMBER) {
        fprintf(stderr, "header version %d, library version %u\n", PBSA_VERSION_NUMBER,
                pbsa_version_number());
        return 1;
    }
    printf("pbsattn %s: %s\n", pbsa_version_string(), pbsa_status_string(PBSA_SUCCESS));
    return 0;
}
