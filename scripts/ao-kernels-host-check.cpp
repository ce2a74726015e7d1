// Runs the ao-loop's GPU kernels (harness/src/sys/ao_kernels.cu) on the host, so that their
// arithmetic is checked where no GPU is: each block's threads are std::threads, __shared__
// is a static (one block at a time), __syncthreads a barrier. Checks: centroids of spots
// with known shifts (as the CPU stage's unit test), pixel signals against a double-precision
// reference, the integrator with and without the clipped copy, the clip.
// Built and run by scripts/check-ao-kernels.sh; exits 1 on any disagreement.
#include <pthread.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __shared__ static
static thread_local unsigned emu_tid, emu_ntid, emu_ctaid;
static pthread_barrier_t emu_bar;
static inline unsigned __nvvm_read_ptx_sreg_tid_x() { return emu_tid; }
static inline unsigned __nvvm_read_ptx_sreg_ntid_x() { return emu_ntid; }
static inline unsigned __nvvm_read_ptx_sreg_ctaid_x() { return emu_ctaid; }
static inline void __syncthreads() { pthread_barrier_wait(&emu_bar); }

#include "../harness/src/sys/ao_kernels.cu"

static void launch(unsigned grid, unsigned block, const std::function<void()> &f) {
    for (unsigned b = 0; b < grid; b++) {
        pthread_barrier_init(&emu_bar, nullptr, block);
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < block; t++)
            ts.emplace_back([=, &f] {
                emu_tid = t;
                emu_ntid = block;
                emu_ctaid = b;
                f();
            });
        for (auto &t : ts) t.join();
        pthread_barrier_destroy(&emu_bar);
    }
}

static int bad = 0;
static void expect(bool ok, const char *what, unsigned i, double got, double want) {
    if (!ok && bad++ < 10) printf("%s %u: %g, want %g\n", what, i, got, want);
}

int main() {
    // Centroids: a 6x8 grid of 8x8 cells on 48x64 px, one Gaussian spot per cell.
    const unsigned h = 48, w = 64, sy = 6, sx = 8, ch = 8, cw = 8, n = sy * sx;
    std::vector<u16> frame(h * w);
    std::vector<float> dark(h * w), flat(h * w), out(2 * n), dxs(n), dys(n);
    for (unsigned i = 0; i < h * w; i++) {
        dark[i] = 100.0f + i % 7;
        flat[i] = 1.0f + 0.01f * ((float)(i % 5) - 2.0f);
    }
    for (unsigned s = 0; s < n; s++) {
        dxs[s] = 0.9f * ((float)(s % 5) - 2.0f) / 2.0f;
        dys[s] = 0.7f * ((float)(s % 3) - 1.0f);
        unsigned y0 = (s / sx) * ch, x0 = (s % sx) * cw;
        float cy = (ch - 1) / 2.0f + dys[s], cx = (cw - 1) / 2.0f + dxs[s];
        for (unsigned y = 0; y < ch; y++)
            for (unsigned x = 0; x < cw; x++) {
                unsigned i = (y0 + y) * w + x0 + x;
                float r2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
                float v = 4000.0f * expf(-r2 / (2.0f * 1.333f * 1.333f));
                frame[i] = (u16)lroundf(dark[i] + v / flat[i]);
            }
    }
    launch((n + 255) / 256, 256,
           [&] { ao_centroids(frame.data(), dark.data(), flat.data(), out.data(), w, sy, sx, ch, cw); });
    for (unsigned s = 0; s < n; s++) {
        expect(fabsf(out[s] - dxs[s]) < 0.05f, "centroid x", s, out[s], dxs[s]);
        expect(fabsf(out[n + s] - dys[s]) < 0.05f, "centroid y", s, out[n + s], dys[s]);
    }

    // Pixel signals: 2000 valid pixels, a flat field (signals 0), then a ramp.
    std::vector<u32> valid;
    for (unsigned i = 0; i < 2000; i++) valid.push_back(i * 3 % (h * w));
    std::vector<float> sig(valid.size());
    for (unsigned i = 0; i < h * w; i++) frame[i] = (u16)lroundf(dark[i] + 200.0f / flat[i]);
    launch(1, PIXEL_THREADS,
           [&] { ao_pixels(frame.data(), dark.data(), flat.data(), valid.data(), sig.data(), valid.size()); });
    for (unsigned i = 0; i < sig.size(); i++) expect(fabsf(sig[i]) < 0.01f, "flat pixel", i, sig[i], 0);
    for (unsigned i = 0; i < h * w; i++) frame[i] = (u16)(dark[i] + (i % 10) * 100 / flat[i]);
    launch(1, PIXEL_THREADS,
           [&] { ao_pixels(frame.data(), dark.data(), flat.data(), valid.data(), sig.data(), valid.size()); });
    std::vector<double> ref(valid.size());
    double total = 0;
    for (unsigned i = 0; i < valid.size(); i++) {
        u32 p = valid[i];
        ref[i] = std::max(0.0, (double)frame[p] - dark[p]) * flat[p];
        total += ref[i];
    }
    for (unsigned i = 0; i < valid.size(); i++) {
        double want = ref[i] / (total / valid.size()) - 1.0;
        expect(fabs(sig[i] - want) < 1e-4, "ramp pixel", i, sig[i], want);
    }

    // Integrator (modal: no clipped copy; zonal: clipped commands) and the clip.
    std::vector<float> state = {0.5f, -2.0f, 3.0f}, modes = {1.0f, 1.0f, -4.0f}, clipped(3);
    launch(1, 256, [&] { ao_integrate(state.data(), modes.data(), 3, 0.5f, 0.9f, clipped.data(), 1.0f); });
    const float want[3] = {0.9f * 0.5f - 0.5f, 0.9f * -2.0f - 0.5f, 0.9f * 3.0f + 2.0f};
    for (unsigned i = 0; i < 3; i++) {
        expect(fabsf(state[i] - want[i]) < 1e-6f, "integrator", i, state[i], want[i]);
        float c = std::max(-1.0f, std::min(1.0f, want[i]));
        expect(fabsf(clipped[i] - c) < 1e-6f, "clipped command", i, clipped[i], c);
    }
    launch(1, 256, [&] { ao_integrate(state.data(), modes.data(), 3, 0.5f, 0.9f, nullptr, 1.0f); });
    expect(fabsf(state[0] - (0.9f * want[0] - 0.5f)) < 1e-6f, "integrator, no clip", 0, state[0],
           0.9f * want[0] - 0.5f);
    std::vector<float> cmd = {-3.0f, 0.25f, 7.0f};
    launch(1, 256, [&] { ao_clip(cmd.data(), 3, 1.0f); });
    expect(cmd[0] == -1.0f && cmd[1] == 0.25f && cmd[2] == 1.0f, "clip", 0, cmd[0], -1);

    if (bad) {
        printf("ao kernels: %d disagreement(s)\n", bad);
        return 1;
    }
    printf("ao kernels agree on the host: centroids (%u subapertures), pixel signals (%zu valid), "
           "integrator, clip\n", n, valid.size());
    return 0;
}
