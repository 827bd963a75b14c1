/* Hopper's sm_90a instructions from OpenCL C: the PTX rewrite that turns cl/wgmma_ptx.cl's
 * markers into instructions (src/launch/ptx_sm90a.c). */
#ifndef PBSA_PTX_SM90A_H
#define PBSA_PTX_SM90A_H

#include <stddef.h>

/* The marker that cl/wgmma_ptx.cl writes before each sm_90a instruction, as a PTX comment. */
#define PBSA_SM90A_MARKER "// PBSA_SM90A "

/* Rewrites ptx, the text NVIDIA's OpenCL compiler made of a program that uses cl/wgmma_ptx.cl,
 * into sm_90a PTX: each marker is removed, so the instruction after it stays, and the target
 * directive ".target sm_90" becomes ".target sm_90a" (the rest of its line is kept). Returns a new
 * NUL-terminated string that the caller frees, with *markers set to the number of markers
 * removed; NULL when ptx has no ".target sm_90" directive (another target: nothing to patch) or
 * on allocation failure. Thread-safe (no shared state). */
char *pbsa_ptx_sm90a(const char *ptx, size_t *markers);

#endif
