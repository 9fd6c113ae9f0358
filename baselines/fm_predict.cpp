// The prediction of one Gibbs sample of a factorization machine whose features are all in relation
// blocks (baselines/bayes.py), added into a running sum: the same arithmetic, operation for
// operation, as myfm 0.3.6's FM::predict_score_write_target with an empty X, so the posterior mean
// summed over the samples is bitwise myfm's Predictor::predict. baselines/bayes.py checks that once
// per process (native_differs) and uses this only where it holds.
//
// myfm's order, per sample, for pair j with rows u_b = at_b[j] of blocks b = 0, 1, ...:
//   t  = w0 + 0.0                                   (w0 + X * w over X's zero columns)
//   t += c_b[u_b] for each block in order           (c_b[r] = sum over row r of x * w[col])
//   per factor f:
//     q  = 0.0; q  += a_b[u_b, f] for each block    (a_b[r, f] = sum of x * V[col, f])
//     t += (q * q) * 0.5
//     q2 = 0.0; q2 += s_b[u_b, f] for each block    (s_b[r, f] = sum of (x * x) * (V[col, f]^2))
//     t -= q2 * 0.5
//   result[j] += t
// Each row sum runs over the row's entries in CSR order from 0.0 (Eigen's row-major sparse times
// dense vector). Vectorising across factors keeps every sum's order; no fused multiply-add
// (-ffp-contract=off), so each product and sum rounds as myfm's do.
#include <cstdint>

namespace {

constexpr int64_t kMaxBlocks = 8;

// c (rows), a (rows x k), s (rows x k) of one block
void block_terms(const int64_t* indptr, const int64_t* indices, const double* data, int64_t rows,
                 int64_t offset, const double* w, const double* V, int64_t k, double* c, double* a,
                 double* s) {
  for (int64_t r = 0; r < rows; ++r) {
    double cr = 0.0;
    double* ar = a + r * k;
    double* sr = s + r * k;
    for (int64_t f = 0; f < k; ++f) {
      ar[f] = 0.0;
      sr[f] = 0.0;
    }
    for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e) {
      const double x = data[e];
      const double xx = x * x;
      const int64_t col = offset + indices[e];
      cr += x * w[col];
      const double* v = V + col * k;
      for (int64_t f = 0; f < k; ++f) {
        ar[f] += x * v[f];
        sr[f] += xx * (v[f] * v[f]);
      }
    }
    c[r] = cr;
  }
}

// Block b's c, a and s in the scratch (see fm_add_sample).
struct Terms {
  const double* c;
  const double* a;
  const double* s;
};

// The pairs' predictions added into result.  NB: the number of blocks when known at compile time
// (2: users and items), else 0 and nb says.  One pair at a time: its t is a chain of 2k dependent
// additions, and the out-of-order core already overlaps consecutive pairs' chains (interleaving 2,
// 4 or 8 pairs by hand was slower at the ML-100K shape).
template <int NB>
void pairs(const Terms* blocks, const int64_t* const* at, int64_t k, double w0, int64_t n, double* result,
           int64_t nb = NB) {
  int64_t r[kMaxBlocks];
  for (int64_t j = 0; j < n; ++j) {
    double t = w0 + 0.0;
    for (int64_t b = 0; b < nb; ++b) {
      t += blocks[b].c[at[b][j]];
      r[b] = at[b][j] * k;
    }
    for (int64_t f = 0; f < k; ++f) {
      double q = 0.0;
      double q2 = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        q += blocks[b].a[r[b] + f];
        q2 += blocks[b].s[r[b] + f];
      }
      t += (q * q) * 0.5;
      t -= q2 * 0.5;
    }
    result[j] += t;
  }
}

}  // namespace

extern "C" {

// One sample (w0, w: n_features, V: n_features x k row-major) over n pairs; block b has CSR rows
// (indptr[b], indices[b], data[b]; rows[b] rows, its columns starting at feature offsets[b]) and
// pair j uses its row at[b][j]. scratch holds sum_b rows[b] * (1 + 2k) doubles. Python checked
// every index (bayes.native_posterior_mean); nothing is allocated here. Returns 0, or 1 when there
// are more than kMaxBlocks blocks.
int fm_add_sample(double w0, const double* w, const double* V, int64_t k, int64_t n_blocks,
                  const int64_t* const* indptr, const int64_t* const* indices,
                  const double* const* data, const int64_t* rows, const int64_t* offsets,
                  const int64_t* const* at, int64_t n, double* scratch, double* result) {
  if (n_blocks < 1 || n_blocks > kMaxBlocks) return 1;
  // scratch layout per block: c (rows), a (rows x k), s (rows x k)
  Terms blocks[kMaxBlocks];
  double* next = scratch;
  for (int64_t b = 0; b < n_blocks; ++b) {
    double* c = next;
    double* a = c + rows[b];
    double* s = a + rows[b] * k;
    next = s + rows[b] * k;
    block_terms(indptr[b], indices[b], data[b], rows[b], offsets[b], w, V, k, c, a, s);
    blocks[b] = {c, a, s};
  }
  if (n_blocks == 2) {
    pairs<2>(blocks, at, k, w0, n, result);
  } else {
    pairs<0>(blocks, at, k, w0, n, result, n_blocks);
  }
  return 0;
}

}  // extern "C"
