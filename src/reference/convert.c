/* CPU reference: conversions between float and the 16-bit storage formats, and host tensor
 * element reads and checks. */
#include "pbsattn_ref.h"
#include "reference/reference.h"

#include <math.h>
#include <string.h>

static uint32_t float_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static float bits_float(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* value >> shift, rounded to nearest, ties to even. 1 <= shift <= 31. */
static uint32_t shift_round_even(uint32_t value, unsigned shift)
{
    uint32_t kept = value >> shift;
    uint32_t rest = value & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (kept & 1u)))
        kept++;
    return kept;
}

uint16_t pbsa_ref_float_to_half(float x)
{
    uint32_t f = float_bits(x);
    uint32_t sign = (f >> 16) & 0x8000u;
    uint32_t exponent = (f >> 23) & 0xffu;
    uint32_t mantissa = f & 0x7fffffu;

    if (exponent == 0xffu) {
        if (mantissa == 0)
            return (uint16_t)(sign | 0x7c00u);
        /* Keep the top payload bits and force a quiet NaN, so a NaN never becomes Inf. */
        return (uint16_t)(sign | 0x7e00u | (mantissa >> 13));
    }
    int32_t half_exponent = (int32_t)exponent - 127 + 15;
    if (half_exponent >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (half_exponent <= 0) {
        /* Half subnormal: the result is the full significand times 2^(half_exponent - 14) in
         * units of 2^-24. Beyond a shift of 25 even the largest significand is below half a unit
         * (float subnormals land here too). */
        unsigned shift = (unsigned)(14 - half_exponent);
        if (shift > 25)
            return (uint16_t)sign;
        /* A carry into bit 10 yields the smallest normal, which is the right encoding. */
        return (uint16_t)(sign | shift_round_even(mantissa | 0x800000u, shift));
    }
    /* A mantissa carry ripples into the exponent, up to Inf: again the right encoding. */
    uint32_t rounded = ((uint32_t)half_exponent << 10) + shift_round_even(mantissa, 13);
    return (uint16_t)(sign | rounded);
}

float pbsa_ref_half_to_float(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exponent = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t mantissa = (uint32_t)h & 0x3ffu;

    if (exponent == 0) {
        /* Zero or subnormal: mantissa * 2^-24 is exact in float. */
        float magnitude = ldexpf((float)mantissa, -24);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 0x1fu)
        return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t pbsa_ref_float_to_bf16(float x)
{
    uint32_t f = float_bits(x);
    if ((f & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((f >> 16) | 0x0040u); /* quiet NaN: truncation could give Inf */
    /* Round to nearest even on the dropped 16 bits; overflow correctly rounds up to Inf. */
    uint32_t rounded = f + 0x7fffu + ((f >> 16) & 1u);
    return (uint16_t)(rounded >> 16);
}

float pbsa_ref_bf16_to_float(uint16_t b)
{
    return bits_float((uint32_t)b << 16);
}

double pbsa_ref_element(const pbsa_host_tensor *t, int64_t b, int64_t h, int64_t s, int64_t d)
{
    int64_t index = b * t->stride_batch + h * t->stride_head + s * t->stride_seq + d;
    switch (t->dtype) {
    case PBSA_DTYPE_F32: return (double)((const float *)t->data)[index];
    case PBSA_DTYPE_F16: return (double)pbsa_ref_half_to_float(((const uint16_t *)t->data)[index]);
    case PBSA_DTYPE_BF16: return (double)pbsa_ref_bf16_to_float(((const uint16_t *)t->data)[index]);
    }
    return NAN;
}

int pbsa_ref_check_tensor(const pbsa_host_tensor *t)
{
    if (!t || !t->data)
        return PBSA_ERROR_NULL_ARGUMENT;
    if (t->dtype != PBSA_DTYPE_F32 && t->dtype != PBSA_DTYPE_F16 && t->dtype != PBSA_DTYPE_BF16)
        return PBSA_ERROR_INVALID_VALUE;
    if (t->batch <= 0 || t->heads <= 0 || t->seq <= 0 || t->head_dim <= 0)
        return PBSA_ERROR_INVALID_VALUE;
    return PBSA_SUCCESS;
}
