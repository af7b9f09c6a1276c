"""How much a fused CPU kernel would save in the edge convolution (issue 18): a probe, not used by crysk.

What is left of a CPU training step is mostly torch's elementwise, batch-norm and index kernels in the
per-edge half of each convolution, each one pass over ``(n_edges, 64)`` tensors. This script compiles two
small C++/OpenMP kernels with ``torch.utils.cpp_extension.load_inline`` (gcc and ninja needed; ~1 minute once,
then cached by torch) that do the same work in fewer passes, and times them against the torch operations the
fused layer (:class:`crysk.nn.layers._EdgeConv`) runs today, on random data of a real batch's size (91,464
edges, 12 per atom, 64 channels per half):

* forward: batch-norm affine, ``sigmoid`` of the filter half, ``softplus`` of the core half (both kept for
  backward), their product and its sum over each atom's edges;
* backward: the gate's backward in place with the per-channel sums batch norm's backward needs (one pass),
  then ``dy * a + c - z * b`` in place with the sums into the source atoms (a second pass). The torch
  reference takes its channel sums with ``sum`` where the layer uses torch's batch-norm-backward kernel, so it
  is somewhat pessimistic.

Command::

    python benchmarks/fused_cpu_probe.py --threads 2

Run it alone (every other job stopped): the figures are medians over ``--repeats`` alternating calls.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.cpp_extension import load_inline

SOURCE = r"""
#include <vector>

#include <torch/extension.h>
#include <cmath>
#include <omp.h>
// g (2,E,d) in: z; out: gate values [sigmoid(bn(z0)), softplus(bn(z1))]; returns per-atom sums of s*sp (degree-uniform)
torch::Tensor bn_gate_sum(torch::Tensor z, torch::Tensor g, torch::Tensor scale, torch::Tensor shift, int64_t degree) {
  const int64_t E = z.size(1), d = z.size(2), A = E / degree;
  auto out = torch::empty({A, d}, z.options());
  const float* zp = z.data_ptr<float>(); float* gp = g.data_ptr<float>(); float* op = out.data_ptr<float>();
  const float* sc = scale.data_ptr<float>(); const float* sh = shift.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t a = 0; a < A; ++a) {
    float acc[256];
    for (int64_t c = 0; c < d; ++c) acc[c] = 0.f;
    for (int64_t k = 0; k < degree; ++k) {
      const int64_t e = a * degree + k;
      const float* z0 = zp + e * d; const float* z1 = zp + (E + e) * d;
      float* g0 = gp + e * d; float* g1 = gp + (E + e) * d;
      #pragma omp simd
      for (int64_t c = 0; c < d; ++c) {
        float f = z0[c] * sc[c] + sh[c];
        float x = z1[c] * sc[d + c] + sh[d + c];
        float s = 1.f / (1.f + std::exp(-f));
        float sp = x > 20.f ? x : std::log1p(std::exp(x));
        g0[c] = s; g1[c] = sp; acc[c] += s * sp;
      }
    }
    for (int64_t c = 0; c < d; ++c) op[a * d + c] = acc[c];
  }
  return out;
}

// pass 1: gates (2,E,d) [s, sp] -> dy in place; returns per-channel sums (2 halves x d) of dy and dy*z
std::vector<torch::Tensor> gate_bwd_sums(torch::Tensor grad, torch::Tensor gates, torch::Tensor z, int64_t degree) {
  const int64_t E = z.size(1), d = z.size(2), A = E / degree;
  float* gp = gates.data_ptr<float>(); const float* zp = z.data_ptr<float>(); const float* gr = grad.data_ptr<float>();
  int nt = omp_get_max_threads();
  auto part = torch::zeros({nt, 4, d}, z.options());
  float* pp = part.data_ptr<float>();
  #pragma omp parallel
  {
    float* acc = pp + omp_get_thread_num() * 4 * d;
    #pragma omp for schedule(static)
    for (int64_t a = 0; a < A; ++a) {
      const float* m = gr + a * d;
      for (int64_t k = 0; k < degree; ++k) {
        const int64_t e = a * degree + k;
        float* s = gp + e * d; float* sp = gp + (E + e) * d;
        const float* z0 = zp + e * d; const float* z1 = zp + (E + e) * d;
        #pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          float sv = s[c], spv = sp[c];
          float df = m[c] * spv * sv * (1.f - sv);
          float dc = m[c] * sv * (1.f - std::exp(-spv));
          s[c] = df; sp[c] = dc;
          acc[c] += df; acc[d + c] += df * z0[c]; acc[2*d + c] += dc; acc[3*d + c] += dc * z1[c];
        }
      }
    }
  }
  return {part.sum(0)};
}
// pass 2: grad_z = dy*a + c0 - z*b in place (per half/channel), and src sums (degree-uniform) into out (A, 2d)
torch::Tensor bn_bwd_apply(torch::Tensor dy, torch::Tensor z, torch::Tensor a_, torch::Tensor b_, torch::Tensor c_, int64_t degree) {
  const int64_t E = z.size(1), d = z.size(2), A = E / degree;
  float* dp = dy.data_ptr<float>(); const float* zp = z.data_ptr<float>();
  const float* av = a_.data_ptr<float>(); const float* bv = b_.data_ptr<float>(); const float* cv = c_.data_ptr<float>();
  auto out = torch::empty({A, 2 * d}, z.options()); float* op = out.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t a = 0; a < A; ++a) {
    for (int h = 0; h < 2; ++h) {
      float acc[256];
      for (int64_t c = 0; c < d; ++c) acc[c] = 0.f;
      for (int64_t k = 0; k < degree; ++k) {
        const int64_t e = h * E + a * degree + k;
        float* g = dp + e * d; const float* zz = zp + e * d;
        #pragma omp simd
        for (int64_t c = 0; c < d; ++c) { float v = g[c] * av[h*d+c] + cv[h*d+c] - zz[c] * bv[h*d+c]; g[c] = v; acc[c] += v; }
      }
      for (int64_t c = 0; c < d; ++c) op[a * 2 * d + h * d + c] = acc[c];
    }
  }
  return out;
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    mod = load_inline("crysk_fused_cpu_probe", cpp_sources=SOURCE,
                      functions=["bn_gate_sum", "gate_bwd_sums", "bn_bwd_apply"],
                      extra_cflags=["-O3", "-march=native", "-fopenmp", "-ffast-math"], extra_ldflags=["-fopenmp"])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    deg, d = 12, 64
    E = 91464 - 91464 % deg
    A = E // deg
    z = torch.randn(2, E, d)
    scale, shift = torch.rand(2, d) + 0.5, torch.randn(2, d) * 0.1
    g, g_ref = torch.empty_like(z), torch.empty_like(z)
    grad = torch.randn(A, d)
    s0, sp0 = torch.rand(E, d), torch.rand(E, d) * 2
    a_, b_, c_ = torch.rand(2, d), torch.rand(2, d) * 0.01, torch.randn(2, d) * 0.01

    def forward_torch():
        torch.addcmul(shift.view(2, 1, d), z, scale.view(2, 1, d), out=g_ref)
        g_ref[0].sigmoid_()
        torch.ops.aten.softplus.out(g_ref[1], 1, 20, out=g_ref[1])
        return torch.mul(g_ref[0], g_ref[1]).view(-1, deg, d).sum(1)

    def forward_fused():
        return mod.bn_gate_sum(z, g, scale, shift, deg)

    def backward_torch():
        g_ref[0].copy_(s0)
        g_ref[1].copy_(sp0)
        s, sp = g_ref[0], g_ref[1]
        m_sp = torch.empty(E, d)
        torch.mul(sp.view(-1, deg, d), grad.unsqueeze(1), out=m_sp.view(-1, deg, d))
        gc = sp.neg_().exp_().sub_(1.0).mul_(s)
        gc.view(-1, deg, d).mul_(grad.neg().unsqueeze(1))
        torch.ops.aten.sigmoid_backward.grad_input(m_sp, s, grad_input=s)
        [(g_ref[h].sum(0), (g_ref[h] * z[h]).sum(0)) for h in range(2)]
        gz = torch.addcmul(c_.view(2, 1, d), g_ref, a_.view(2, 1, d)).addcmul_(z, b_.view(2, 1, d), value=-1)
        return torch.cat([gz[h].view(-1, deg, d).sum(1) for h in range(2)], 1)

    def backward_fused():
        g[0].copy_(s0)
        g[1].copy_(sp0)
        mod.gate_bwd_sums(grad, g, z, deg)
        return mod.bn_bwd_apply(g, z, a_, b_, c_, deg)

    for name, ref, fused in (("forward", forward_torch, forward_fused), ("backward", backward_torch, backward_fused)):
        diff = (ref() - fused()).abs().max().item()
        times = {"torch": [], "fused": []}
        for _ in range(args.repeats):
            for key, fn in (("torch", ref), ("fused", fused)):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
        print(f"{name}: {E:,} edges, {args.threads} thread(s): torch ops {med['torch']:.2f} ms, fused "
              f"{med['fused']:.2f} ms (x{med['torch'] / med['fused']:.1f}); max abs difference {diff:.1e} "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
