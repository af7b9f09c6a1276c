// crysk's fused CPU kernels for the per-edge half of the CGCNN convolution (crysk/nn/cpu_kernels.py builds
// this file on first use; crysk/nn/layers.py's _EdgeConv calls it).
//
// Each kernel is one pass over the per-edge tensors where torch needs three to six (gather, add, batch-norm
// statistics; batch-norm affine, sigmoid, softplus, product, sum; the gate's backward and batch norm's
// channel sums; batch norm's backward and the sums into the centre atoms). They cover the graphs crysk
// builds: every atom's `degree` edges stored atom by atom (layers.uniform_degree), float32, contiguous.
//
// Layout (as _EdgeConv's): per-edge tensors are (2, E, d), the filter half then the core half, each
// contiguous; the atoms' products `pair` are (A, 4d): [centre filter | centre core | nbr filter | nbr core].
// Channel sums are accumulated in float over one atom's edges and in double across atoms, so they do not
// depend on how many threads share the work beyond double rounding.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kGrain = 64;  // atoms per task: enough work per task to amortise the scheduling

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_edges(const torch::Tensor& z, int64_t degree) {
  check(z, "per-edge tensor");
  TORCH_CHECK(z.dim() == 3 && z.size(0) == 2, "per-edge tensors are (2, n_edges, d)");
  TORCH_CHECK(degree > 0 && z.size(1) % degree == 0, "n_edges must be a multiple of the degree");
}

// Per-thread double accumulators of `width` channels, summed when all tasks are done.
struct Partials {
  std::vector<double> data;
  int64_t width;
  explicit Partials(int64_t w) : data(static_cast<size_t>(at::get_num_threads()) * w, 0.0), width(w) {}
  double* mine() {
    const int64_t t = at::get_thread_num();
    TORCH_CHECK(t >= 0 && (t + 1) * width <= static_cast<int64_t>(data.size()), "unexpected thread number");
    return data.data() + t * width;
  }
  std::vector<double> total() const {
    std::vector<double> out(width, 0.0);
    for (size_t i = 0; i < data.size(); ++i) out[i % width] += data[i];
    return out;
  }
};

}  // namespace

// z (2, E, d) holds edge_fea @ w_edge per half; adds the centre atom's part (with the bias) and the neighbour's
// part, in place, and returns (2, 2d): the channels' batch mean and biased variance.
torch::Tensor edge_pre_stats(torch::Tensor z, torch::Tensor pair, torch::Tensor fc_bias, torch::Tensor edge_dst,
                             int64_t degree) {
  check_edges(z, degree);
  check(pair, "pair");
  check(fc_bias, "fc_bias");
  TORCH_CHECK(edge_dst.scalar_type() == torch::kInt64 && edge_dst.is_contiguous(), "edge_dst must be int64");
  const int64_t E = z.size(1), d = z.size(2), A = E / degree, w = 2 * d;
  TORCH_CHECK(pair.size(0) == A && pair.size(1) == 4 * d && fc_bias.numel() == w, "pair or fc_bias of the wrong shape");
  TORCH_CHECK(edge_dst.numel() == E, "edge_dst has the wrong length");
  float* zp = z.data_ptr<float>();
  const float* pp = pair.data_ptr<float>();
  const float* bp = fc_bias.data_ptr<float>();
  const int64_t* dst = edge_dst.data_ptr<int64_t>();
  Partials sums(2 * w);  // [sum x (2d) | sum x^2 (2d)]
  at::parallel_for(0, A, kGrain, [&](int64_t begin, int64_t end) {
    double* acc = sums.mine();
    std::vector<float> s1(w), s2(w);
    for (int64_t a = begin; a < end; ++a) {
      std::fill(s1.begin(), s1.end(), 0.f);
      std::fill(s2.begin(), s2.end(), 0.f);
      for (int64_t k = 0; k < degree; ++k) {
        const int64_t e = a * degree + k, j = dst[e];
        TORCH_CHECK(j >= 0 && j < A, "edge_dst out of range");
        for (int64_t h = 0; h < 2; ++h) {
          float* zr = zp + (h * E + e) * d;
          const float* cr = pp + a * 4 * d + h * d;
          const float* br = bp + h * d;
          const float* nr = pp + j * 4 * d + 2 * d + h * d;
          float* a1 = s1.data() + h * d;
          float* a2 = s2.data() + h * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) {
            const float v = zr[c] + cr[c] + br[c] + nr[c];
            zr[c] = v;
            a1[c] += v;
            a2[c] += v * v;
          }
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        acc[c] += s1[c];
        acc[w + c] += s2[c];
      }
    }
  });
  const std::vector<double> tot = sums.total();
  auto out = torch::empty({2, w}, z.options());
  float* op = out.data_ptr<float>();
  for (int64_t c = 0; c < w; ++c) {
    const double mean = tot[c] / E;
    const double var = tot[w + c] / E - mean * mean;
    op[c] = static_cast<float>(mean);
    op[w + c] = static_cast<float>(var > 0.0 ? var : 0.0);
  }
  return out;
}

// Batch-norm affine (scale, shift: (2d)) of z into g = [sigmoid(filter), softplus(core)] (kept for backward),
// and the sum of sigmoid * softplus over each atom's edges: (A, d).
torch::Tensor gate_forward(torch::Tensor z, torch::Tensor g, torch::Tensor scale, torch::Tensor shift,
                           int64_t degree) {
  check_edges(z, degree);
  check(g, "gate values");
  check(scale, "scale");
  check(shift, "shift");
  const int64_t E = z.size(1), d = z.size(2), A = E / degree;
  TORCH_CHECK(g.sizes() == z.sizes() && scale.numel() == 2 * d && shift.numel() == 2 * d, "shapes differ");
  auto out = torch::empty({A, d}, z.options());
  const float* zp = z.data_ptr<float>();
  float* gp = g.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* sh = shift.data_ptr<float>();
  at::parallel_for(0, A, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      float* acc = op + a * d;
      for (int64_t c = 0; c < d; ++c) acc[c] = 0.f;
      for (int64_t k = 0; k < degree; ++k) {
        const int64_t e = a * degree + k;
        const float* z0 = zp + e * d;
        const float* z1 = zp + (E + e) * d;
        float* g0 = gp + e * d;
        float* g1 = gp + (E + e) * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          const float f = z0[c] * sc[c] + sh[c];
          const float x = z1[c] * sc[d + c] + sh[d + c];
          // -ffast-math assumes no infinities: exp(-f) must not overflow (f < -88.7 gave 1 / (1 + inf) = NaN,
          // not 0), so its argument is capped where sigmoid is 0 in float anyway (exp(-88) = 6e-39);
          // softplus's exp is only used below its threshold, so it is capped there
          const float s = 1.f / (1.f + std::exp(std::min(-f, 88.f)));
          const float sp = x > 20.f ? x : std::log1p(std::exp(std::min(x, 20.f)));  // torch's softplus, threshold 20
          g0[c] = s;
          g1[c] = sp;
          acc[c] += s * sp;
        }
      }
    }
  });
  return out;
}

// The gate's backward: g = [sigmoid(f), softplus(c)] becomes, in place, the gradient of the batch-norm output
// for the atoms' gradient `grad` (A, d). Returns (2, 2d): the channels' sum of it and of it times (z - mean),
// the sums batch norm's backward needs.
torch::Tensor gate_backward_sums(torch::Tensor grad, torch::Tensor g, torch::Tensor z, torch::Tensor mean,
                                 int64_t degree) {
  check_edges(z, degree);
  check(grad, "grad");
  check(g, "gate values");
  check(mean, "mean");
  const int64_t E = z.size(1), d = z.size(2), A = E / degree, w = 2 * d;
  TORCH_CHECK(g.sizes() == z.sizes() && grad.size(0) == A && grad.size(1) == d && mean.numel() == w, "shapes differ");
  const float* gr = grad.data_ptr<float>();
  float* gp = g.data_ptr<float>();
  const float* zp = z.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  Partials sums(2 * w);  // [sum dy (2d) | sum dy * (z - mean) (2d)]
  at::parallel_for(0, A, kGrain, [&](int64_t begin, int64_t end) {
    double* acc = sums.mine();
    std::vector<float> s1(w), s2(w);
    for (int64_t a = begin; a < end; ++a) {
      std::fill(s1.begin(), s1.end(), 0.f);
      std::fill(s2.begin(), s2.end(), 0.f);
      const float* m = gr + a * d;
      for (int64_t k = 0; k < degree; ++k) {
        const int64_t e = a * degree + k;
        float* s = gp + e * d;
        float* sp = gp + (E + e) * d;
        const float* z0 = zp + e * d;
        const float* z1 = zp + (E + e) * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          const float sv = s[c], spv = sp[c];
          // d/df = grad * softplus(c) * s * (1 - s);  d/dc = grad * s * sigmoid(c), sigmoid(c) = 1 - exp(-softplus(c))
          const float df = m[c] * spv * sv * (1.f - sv);
          const float dc = m[c] * sv * (1.f - std::exp(-spv));
          s[c] = df;
          sp[c] = dc;
          s1[c] += df;
          s2[c] += df * (z0[c] - mp[c]);
          s1[d + c] += dc;
          s2[d + c] += dc * (z1[c] - mp[d + c]);
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        acc[c] += s1[c];
        acc[w + c] += s2[c];
      }
    }
  });
  const std::vector<double> tot = sums.total();
  auto out = torch::empty({2, w}, z.options());
  float* op = out.data_ptr<float>();
  for (int64_t c = 0; c < 2 * w; ++c) op[c] = static_cast<float>(tot[c]);
  return out;
}

// Batch norm's backward applied in place, dy -> dz = dy * a + c0 - z * b per channel ((2d) each), and the
// gradient of the atoms' products: (A, 4d), [centre filter | centre core | nbr filter | nbr core], dz summed
// over each atom's own edges (centre) and over the edges whose neighbour it is (edge_dst). The neighbour sums
// scatter to arbitrary atoms, so each thread adds into its own (A, 2d) buffer, summed at the end: a small
// pass over A rows instead of torch's index_add_ over all E rows again.
torch::Tensor bn_backward_apply(torch::Tensor dy, torch::Tensor z, torch::Tensor a_, torch::Tensor b_,
                                torch::Tensor c_, torch::Tensor edge_dst, int64_t degree) {
  check_edges(z, degree);
  check(dy, "dy");
  check(a_, "a");
  check(b_, "b");
  check(c_, "c");
  TORCH_CHECK(edge_dst.scalar_type() == torch::kInt64 && edge_dst.is_contiguous(), "edge_dst must be int64");
  const int64_t E = z.size(1), d = z.size(2), A = E / degree, w = 2 * d;
  TORCH_CHECK(dy.sizes() == z.sizes() && a_.numel() == w && b_.numel() == w && c_.numel() == w, "shapes differ");
  TORCH_CHECK(edge_dst.numel() == E, "edge_dst has the wrong length");
  float* dp = dy.data_ptr<float>();
  const float* zp = z.data_ptr<float>();
  const float* av = a_.data_ptr<float>();
  const float* bv = b_.data_ptr<float>();
  const float* cv = c_.data_ptr<float>();
  const int64_t* dst = edge_dst.data_ptr<int64_t>();
  const int64_t nt = at::get_num_threads();
  auto nbr = torch::zeros({nt, A, w}, z.options());
  float* np_ = nbr.data_ptr<float>();
  auto out = torch::empty({A, 2 * w}, z.options());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, A, kGrain, [&](int64_t begin, int64_t end) {
    const int64_t t = at::get_thread_num();
    TORCH_CHECK(t >= 0 && t < nt, "unexpected thread number");
    float* mine = np_ + t * A * w;
    for (int64_t a = begin; a < end; ++a) {
      for (int64_t h = 0; h < 2; ++h) {
        float* acc = op + a * 2 * w + h * d;
        const float* ah = av + h * d;
        const float* bh = bv + h * d;
        const float* ch = cv + h * d;
        for (int64_t c = 0; c < d; ++c) acc[c] = 0.f;
        for (int64_t k = 0; k < degree; ++k) {
          const int64_t e = a * degree + k, j = dst[e];
          TORCH_CHECK(j >= 0 && j < A, "edge_dst out of range");
          float* gz = dp + (h * E + e) * d;
          const float* zz = zp + (h * E + e) * d;
          float* nb = mine + j * w + h * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) {
            const float v = gz[c] * ah[c] + ch[c] - zz[c] * bh[c];
            gz[c] = v;
            acc[c] += v;
            nb[c] += v;
          }
        }
      }
    }
  });
  // the threads' neighbour sums, into the last 2d columns
  at::parallel_for(0, A, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      float* dst_row = op + a * 2 * w + w;
      for (int64_t c = 0; c < w; ++c) dst_row[c] = 0.f;
      for (int64_t t = 0; t < nt; ++t) {
        const float* src_row = np_ + (t * A + a) * w;
#pragma omp simd
        for (int64_t c = 0; c < w; ++c) dst_row[c] += src_row[c];
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("edge_pre_stats", &edge_pre_stats, "z += centre[src] + bias + nbr[dst]; channel mean and biased variance");
  m.def("gate_forward", &gate_forward, "batch-norm affine, gate values kept, gated sum into the centre atoms");
  m.def("gate_backward_sums", &gate_backward_sums, "gate backward in place, with batch norm's channel sums");
  m.def("bn_backward_apply", &bn_backward_apply, "batch-norm backward in place; gradient of the atoms' products");
}
