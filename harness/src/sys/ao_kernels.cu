// The ao-loop's GPU form: the slopes stage and the reconstructor's element-wise steps,
// the same arithmetic as the CPU stages (harness/src/cases/ao/slopes.rs and recon.rs).
// Checked on the host by scripts/check-ao-kernels.sh, then compiled to PTX by
// scripts/build-ptx.sh (clang, no CUDA toolkit needed) into ao_kernels.ptx, which the
// harness embeds and the driver JIT-compiles for the card.
// Written against clang's NVPTX builtins only, so no CUDA header is needed.

#ifndef AO_HOST_EMULATION // scripts/check-ao-kernels.sh runs these kernels on the host
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __device__ __attribute__((device))
#endif

typedef unsigned short u16;
typedef unsigned int u32;

static __device__ inline u32 tid(void) { return __nvvm_read_ptx_sreg_tid_x(); }
static __device__ inline u32 ntid(void) { return __nvvm_read_ptx_sreg_ntid_x(); }
static __device__ inline u32 ctaid(void) { return __nvvm_read_ptx_sreg_ctaid_x(); }

// Dark-subtracted (clamped at 0) and flat-fielded pixel i.
static __device__ inline float calibrated(const u16 *frame, const float *dark,
                                          const float *flat, u32 i) {
    float v = (float)frame[i] - dark[i];
    return (v > 0.0f ? v : 0.0f) * flat[i];
}

// Shack-Hartmann centroids: one thread per subaperture of an sy x sx grid of ch x cw
// cells on a frame w pixels wide. out[s] = x offset, out[sy*sx + s] = y offset of the
// centre of gravity from the cell centre (0 for a dark cell), s = row * sx + column.
extern "C" __global__ void ao_centroids(const u16 *frame, const float *dark,
                                        const float *flat, float *out, u32 w, u32 sy,
                                        u32 sx, u32 ch, u32 cw) {
    u32 s = ctaid() * ntid() + tid();
    u32 n = sy * sx;
    if (s >= n) return;
    u32 by = s / sx, bx = s % sx;
    float sum = 0.0f, ssx = 0.0f, ssy = 0.0f;
    for (u32 dy = 0; dy < ch; dy++) {
        u32 row = (by * ch + dy) * w + bx * cw;
        for (u32 dx = 0; dx < cw; dx++) {
            float v = calibrated(frame, dark, flat, row + dx);
            sum += v;
            ssx += v * (float)dx;
            ssy += v * (float)dy;
        }
    }
    float mx = ((float)cw - 1.0f) / 2.0f, my = ((float)ch - 1.0f) / 2.0f;
    out[s] = sum > 0.0f ? ssx / sum - mx : 0.0f;
    out[n + s] = sum > 0.0f ? ssy / sum - my : 0.0f;
}

#define PIXEL_THREADS 1024

// Pixel signals: the n valid pixels (indices into the frame), calibrated and normalized
// by their mean, minus 1. One block of PIXEL_THREADS threads: each calibrates a strided
// share, the block sums them in shared memory, then each scales its share.
extern "C" __global__ void ao_pixels(const u16 *frame, const float *dark, const float *flat,
                                     const u32 *valid, float *out, u32 n) {
    __shared__ float part[PIXEL_THREADS];
    u32 t = tid(), step = ntid();
    float acc = 0.0f;
    for (u32 i = t; i < n; i += step) {
        float v = calibrated(frame, dark, flat, valid[i]);
        out[i] = v;
        acc += v;
    }
    part[t] = acc;
    __syncthreads();
    for (u32 half = step / 2; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    float mean = part[0] / (float)n;
    float inv = mean > 0.0f ? 1.0f / mean : 0.0f;
    for (u32 i = t; i < n; i += step) out[i] = out[i] * inv - 1.0f;
}

// Leaky integrator on n modes: state = leak * state - gain * modes; when clipped is not
// null (zonal control: the state is the commands), clipped = state clamped to +-lim.
extern "C" __global__ void ao_integrate(float *state, const float *modes, u32 n, float gain,
                                        float leak, float *clipped, float lim) {
    u32 i = ctaid() * ntid() + tid();
    if (i >= n) return;
    float s = leak * state[i] - gain * modes[i];
    state[i] = s;
    if (clipped) clipped[i] = s < -lim ? -lim : (s > lim ? lim : s);
}

// Commands clamped to +-lim in place.
extern "C" __global__ void ao_clip(float *v, u32 n, float lim) {
    u32 i = ctaid() * ntid() + tid();
    if (i >= n) return;
    float c = v[i];
    v[i] = c < -lim ? -lim : (c > lim ? lim : c);
}
