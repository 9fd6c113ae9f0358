// Native CPU kernels of AutoRec's sparse training path (autorec/models/autorec/torch/native.py).
//
// The five products of one sparse step, computed in column order over a counting-sort CSC of the
// batch so that each weight row is read from memory once per batch.  Compiled on first use into a
// per-machine cache and loaded with ctypes; every function below is `extern "C"`.
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include <algorithm>
#include <cmath>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif
typedef int64_t i64;

// Run f(lo, hi, t) for each chunk t of [0, n) split at the given boundaries, one chunk per thread.
// With OpenMP this is the process's OpenMP pool (torch's own libgomp when torch is loaded first), so
// the kernels and torch's operators share threads instead of competing with its spinning workers.
// Where OpenMP grants fewer threads than asked (OMP_DYNAMIC, OMP_THREAD_LIMIT), a thread runs
// several chunks in turn: each chunk keeps its own index t (and so its own scratch), so the results
// do not depend on the team's size.
template <class F> static void run_split(const std::vector<i64>& cut, F f) {
    int nt = (int)cut.size() - 1;
    if (nt <= 1) { f(cut[0], cut[1], 0); return; }
#ifdef _OPENMP
    #pragma omp parallel num_threads(nt)
    {
        const int team = omp_get_num_threads();
        for (int t = omp_get_thread_num(); t < nt; t += team) f(cut[t], cut[t + 1], t);
    }
#else
    std::vector<std::thread> ts;
    for (int t = 1; t < nt; ++t) ts.emplace_back(f, cut[t], cut[t + 1], t);
    f(cut[0], cut[1], 0);
    for (auto& th : ts) th.join();
#endif
}
static std::vector<i64> even_cut(i64 n, int nt) {
    if (nt < 1) nt = 1;
    if (n < nt) nt = n > 0 ? (int)n : 1;
    std::vector<i64> cut(nt + 1);
    for (int t = 0; t <= nt; ++t) cut[t] = n * t / nt;
    return cut;
}
// Split columns [0, N) so each thread gets about the same cost, row_cost + nnz_j per column (1 for
// the plain products; more where every column also takes an Adam row update).
static std::vector<i64> column_cut(i64 N, const i64* colptr, int nt, i64 row_cost = 1) {
    if (nt < 1) nt = 1;
    if (N < nt) return even_cut(N, nt);
    i64 total = row_cost * N + colptr[N];
    std::vector<i64> cut(nt + 1);
    cut[0] = 0; cut[nt] = N;
    for (int t = 1; t < nt; ++t) {
        i64 target = total * t / nt, lo = cut[t - 1], hi = N;
        while (lo < hi) { i64 mid = (lo + hi) / 2; if (row_cost * mid + colptr[mid] < target) lo = mid + 1; else hi = mid; }
        cut[t] = lo;
    }
    return cut;
}

// d[0, h) = sum over column j's entries p of cv[p] * G[crow[p]] (zero for a column without entries).
// Four entries per loop over the h columns (d read and written once for four of them); each element
// still adds the entries' products one after another in entry order, so the sums do not change.
static inline void column_sum(i64 j, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
                              const float* G, float* __restrict d) {
    std::memset(d, 0, sizeof(float) * h);
    i64 p = colptr[j];
    for (; p + 3 < colptr[j + 1]; p += 4) {
        const float* __restrict g0 = G + (i64)crow[p] * h;
        const float* __restrict g1 = G + (i64)crow[p + 1] * h;
        const float* __restrict g2 = G + (i64)crow[p + 2] * h;
        const float* __restrict g3 = G + (i64)crow[p + 3] * h;
        const float v0 = cv[p], v1 = cv[p + 1], v2 = cv[p + 2], v3 = cv[p + 3];
        #pragma omp simd
        for (i64 c = 0; c < h; ++c) {
            float dc = d[c];
            dc += v0 * g0[c]; dc += v1 * g1[c]; dc += v2 * g2[c]; dc += v3 * g3[c];
            d[c] = dc;
        }
    }
    for (; p < colptr[j + 1]; ++p) {
        const float* __restrict g = G + (i64)crow[p] * h;
        const float v = cv[p];
        #pragma omp simd
        for (i64 c = 0; c < h; ++c) d[c] += v * g[c];
    }
}

// Sum the per-thread partial (B, h) blocks scratch[(t-1) * B * h] (t = 1..used-1) into Z.
static void reduce_rows(i64 B, i64 h, float* Z, const float* scratch, int used) {
    if (used <= 1) return;
    run_split(even_cut(B, used), [&](i64 a, i64 e, int) {
        for (int t = 1; t < used; ++t) {
            const float* s = scratch + (i64)(t - 1) * B * h;
            for (i64 b = a; b < e; ++b) {
                float* zz = Z + b * h; const float* ss = s + b * h;
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) zz[c] += ss[c];
            }
        }
    });
}

// The decoder's backward in one column-ordered pass over the cut: for each column j and each of its
// entries p (row b), the output gradient gv = grad(j, p, H[b], W[j], t) (t: the thread), dH[b] += gv W[j]
// and the column's weight gradient += gv H[b], accumulated into row(j, buf) (buf: a per-thread row of
// h floats), then done(j, that row, the sum of column j's gv).  W is only read here (done may update
// row j: it is not read again).
// Entries are taken four at a time: their four gradients first (with QUADS, grad.quad(j, p, hb[4], w,
// t, gv[4]) gives them at once), then one loop over the h columns applies the four updates, which
// reads W[j] and the weight gradient's row once for four entries instead of once per entry.  Each
// float sees the same operations in the same order as with one entry at a time (the four dH rows are
// distinct: a column holds a row once; the weight gradient's element takes the four products in
// entry order), so the results do not change.
template <bool QUADS = false, class Grad, class Row, class Done>
static void decode_backward_pass(i64 B, i64 N, i64 h, const std::vector<i64>& cut, const i64* colptr,
                                 const int32_t* crow, const float* W, const float* H, float* dH,
                                 float* scratch, Grad grad, Row row, Done done) {
    run_split(cut, [&](i64 a, i64 e, int t) {
        float* dh = t == 0 ? dH : scratch + (i64)(t - 1) * B * h;
        std::memset(dh, 0, sizeof(float) * B * h);
        std::vector<float> buf((size_t)h);
        for (i64 j = a; j < e; ++j) {
            // not __restrict: done() may write row j of W after the entries (the inner loops' omp simd
            // is what vectorises them)
            const float* w = W + j * h;
            float* d = row(j, buf.data());
            std::memset(d, 0, sizeof(float) * h);
            float sb = 0.0f;
            i64 p = colptr[j];
            for (; p + 3 < colptr[j + 1]; p += 4) {
                const float* hb[4];
                for (int q = 0; q < 4; ++q) hb[q] = H + (i64)crow[p + q] * h;
                float gv[4];
                if constexpr (QUADS) grad.quad(j, p, hb, w, t, gv);
                else for (int q = 0; q < 4; ++q) gv[q] = grad(j, p + q, hb[q], w, t);
                sb += gv[0]; sb += gv[1]; sb += gv[2]; sb += gv[3];
                const float g0 = gv[0], g1 = gv[1], g2 = gv[2], g3 = gv[3];
                const float* __restrict h0 = hb[0];
                const float* __restrict h1 = hb[1];
                const float* __restrict h2 = hb[2];
                const float* __restrict h3 = hb[3];
                float* __restrict o0 = dh + (i64)crow[p] * h;
                float* __restrict o1 = dh + (i64)crow[p + 1] * h;
                float* __restrict o2 = dh + (i64)crow[p + 2] * h;
                float* __restrict o3 = dh + (i64)crow[p + 3] * h;
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) {
                    const float wc = w[c];
                    float dc = d[c];
                    o0[c] += g0 * wc; dc += g0 * h0[c];
                    o1[c] += g1 * wc; dc += g1 * h1[c];
                    o2[c] += g2 * wc; dc += g2 * h2[c];
                    o3[c] += g3 * wc; dc += g3 * h3[c];
                    d[c] = dc;
                }
            }
            for (; p < colptr[j + 1]; ++p) {
                const float* __restrict hb = H + (i64)crow[p] * h;
                const float gv = grad(j, p, hb, w, t);
                sb += gv;
                float* __restrict dhb = dh + (i64)crow[p] * h;
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) { dhb[c] += gv * w[c]; d[c] += gv * hb[c]; }
            }
            done(j, d, sb);
        }
    });
    reduce_rows(B, h, dH, scratch, (int)cut.size() - 1);
}

// The entries' values g (CSR order) in column order, so the passes read them sequentially (a random
// load per entry made the decoder's backward pass about 1.4x slower at ML-10M shape).
static std::vector<float> column_order(const std::vector<i64>& cut, const i64* colptr, const i64* cpos,
                                       const float* g) {
    std::vector<float> gc((size_t)colptr[cut.back()] + 1);
    run_split(cut, [&](i64 a, i64 e, int) {
        for (i64 p = colptr[a]; p < colptr[e]; ++p) gc[(size_t)p] = g[cpos[p]];
    });
    return gc;
}

// x[0, h) . w[0, h), one function for every kernel that evaluates the decoder at an entry (the
// forward product and the one-pass decoder step), so both round the same way: noinline keeps one
// machine code for both call sites.
__attribute__((noinline)) static float row_dot(const float* __restrict x, const float* __restrict w, i64 h) {
    float s = 0.0f;
    #pragma omp simd reduction(+:s)
    for (i64 c = 0; c < h; ++c) s += x[c] * w[c];
    return s;
}

// x[q][0, h) . w[0, h) for q = 0..3 in one loop: four independent accumulation chains, where one
// entry at a time waits on each vector FMA's latency.  Each chain is row_dot's computation (the same
// vectorised reduction), so each result is bitwise row_dot's, which dots4_exact() checks once per
// process: where it does not hold (another compiler's choices) the kernels call row_dot per entry.
__attribute__((noinline)) static void row_dot4(const float* const* x, const float* __restrict w, i64 h,
                                               float* out) {
    const float* __restrict x0 = x[0];
    const float* __restrict x1 = x[1];
    const float* __restrict x2 = x[2];
    const float* __restrict x3 = x[3];
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    #pragma omp simd reduction(+:s0, s1, s2, s3)
    for (i64 c = 0; c < h; ++c) {
        s0 += x0[c] * w[c]; s1 += x1[c] * w[c]; s2 += x2[c] * w[c]; s3 += x3[c] * w[c];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

// The number of q in 0..3 for which row_dot4's x[q] . w is bitwise row_dot's.
static int dots4_agree(const float* const* x, const float* w, i64 h) {
    float got[4];
    row_dot4(x, w, h, got);
    int same = 0;
    for (int q = 0; q < 4; ++q) {
        const float want = row_dot(x[q], w, h);
        same += std::memcmp(&want, &got[q], sizeof(float)) == 0;
    }
    return same;
}

// Whether row_dot4 gives bitwise row_dot's results: compared on fixed pseudo-random values of mixed
// signs and magnitudes at every width 1-300 (every tail length of loops stepping up to 256 floats)
// and around the usual hidden sizes (computed once).
static bool dots4_exact() {
    static const bool exact = [] {
        const i64 widths[] = {400, 499, 500, 501, 512, 1000, 1024, 1025};
        std::vector<i64> hs;
        for (i64 h = 1; h <= 300; ++h) hs.push_back(h);
        hs.insert(hs.end(), std::begin(widths), std::end(widths));
        std::vector<float> v(5 * 1025);
        uint32_t state = 2463534242u;
        for (float& x : v) {  // xorshift32: values in about +-2^31 times 2^-31 .. 2^-16
            state ^= state << 13; state ^= state >> 17; state ^= state << 5;
            x = (float)(int32_t)state * std::ldexp(1.0f, -31 - (int)(state % 16));
        }
        for (i64 h : hs) {
            const float* x[4] = {v.data(), v.data() + 1025, v.data() + 2 * 1025, v.data() + 3 * 1025};
            if (dots4_agree(x, v.data() + 4 * 1025, h) != 4) return false;
        }
        return true;
    }();
    return exact;
}

// The column-ordered index of a batch of B rows, a stable counting sort by column on nt threads
// (rows split between them by entries; each thread counts its rows' columns, then writes its
// entries after those of the threads before it, so the result is the one-thread order).  Row b's
// entries are idx/vals[k0, k1) with (k0, k1) = range(b), and sit at out + k in the batch's CSR
// order (out = bptr[b] - k0).  Writes colptr[N+1], and for each column-ordered entry p its row
// crow[p], its value cval[p] and, when cpos is not null, its CSR position cpos[p].  bptr[B+1] is
// the batch's CSR row pointer.  Returns 0, or -1 for a column outside [0, N).
template <class Idx, class Range>
static int csc_index(i64 B, i64 N, const i64* bptr, Range range, const Idx* idx, const float* vals,
                     i64* colptr, int32_t* crow, float* cval, i64* cpos, int nt) {
    const i64 nnz = bptr[B];
    if (nt < 1) nt = 1;
    if (B < nt) nt = B > 0 ? (int)B : 1;
    // the threads' count arrays (nt * N, zeroed and prefix-summed on one thread) must cost less than
    // splitting the entries saves: one thread for a small batch, and at most nnz / N threads
    if (nnz < 16384) nt = 1;
    if (N > 0 && nnz / N < nt) nt = (int)std::max<i64>(1, nnz / N);
    std::vector<i64> cut(nt + 1);
    cut[0] = 0; cut[nt] = B;
    for (int t = 1; t < nt; ++t) {  // the first row at or after each thread's share of the entries
        i64 target = nnz * t / nt, lo = cut[t - 1], hi = B;
        while (lo < hi) { i64 mid = (lo + hi) / 2; if (bptr[mid] < target) lo = mid + 1; else hi = mid; }
        cut[t] = lo;
    }
    std::vector<i64> count((size_t)nt * (size_t)N);  // per thread: counts, then next positions
    std::vector<int> bad(nt, 0);
    run_split(cut, [&](i64 a, i64 e, int t) {
        i64* c = count.data() + (i64)t * N;
        for (i64 b = a; b < e; ++b) {
            const auto [k0, k1] = range(b);
            for (i64 k = k0; k < k1; ++k) {
                const i64 j = (i64)idx[k];
                if (j < 0 || j >= N) { bad[t] = 1; return; }
                c[j]++;
            }
        }
    });
    for (int t = 0; t < nt; ++t)
        if (bad[t]) return -1;
    colptr[0] = 0;
    for (i64 j = 0; j < N; ++j) {
        i64 s = colptr[j];
        for (int t = 0; t < nt; ++t) { i64& c = count[(size_t)t * N + j]; const i64 n = c; c = s; s += n; }
        colptr[j + 1] = s;
    }
    run_split(cut, [&](i64 a, i64 e, int t) {
        i64* next = count.data() + (i64)t * N;
        for (i64 b = a; b < e; ++b) {
            const auto [k0, k1] = range(b);
            const i64 out = bptr[b] - k0;
            for (i64 k = k0; k < k1; ++k) {
                const i64 p = next[idx[k]]++;
                crow[p] = (int32_t)b; cval[p] = vals[k];
                if (cpos) cpos[p] = out + k;
            }
        }
    });
    return 0;
}

extern "C" {

// The batch's entries in column order from its CSR arrays (indptr[B+1], cols, vals): colptr[N+1],
// and for each column-ordered entry p its row crow[p], its position cpos[p] in the CSR arrays and
// its value cval[p] = vals[cpos[p]].  Returns 0, or -1 for a column out of range.
int ar_csc_build(i64 B, i64 N, const i64* indptr, const i64* cols, const float* vals, i64* colptr,
                 int32_t* crow, i64* cpos, float* cval, int nt) {
    auto range = [&](i64 b) { return std::pair<i64, i64>(indptr[b], indptr[b + 1]); };
    return csc_index(B, N, indptr, range, cols, vals, colptr, crow, cval, cpos, nt);
}

// The same index for the batch made of rows rows[0, B) of a matrix's CSR arrays (indptr, indices,
// data), read in place (no copy of the batch in CSR order is made): bptr[B+1] is the batch's CSR
// row pointer (the caller's running sum of the rows' lengths; the rows are in range).  cpos may be
// null; when col / val are not null the batch's CSR column indices and values are written there.
// Returns 0, or -1 for a column out of range.
int ar_csc_gather(i64 B, i64 N, const i64* rows, const i64* indptr, const int32_t* indices,
                  const float* data, const i64* bptr, i64* colptr, int32_t* crow, float* cval, i64* cpos,
                  i64* col, float* val, int nt) {
    auto range = [&](i64 b) { return std::pair<i64, i64>(indptr[rows[b]], indptr[rows[b] + 1]); };
    const int rc = csc_index(B, N, bptr, range, indices, data, colptr, crow, cval, cpos, nt);
    if (rc != 0 || (!col && !val)) return rc;
    run_split(even_cut(B, nt), [&](i64 a, i64 e, int) {
        for (i64 b = a; b < e; ++b) {
            const auto [k0, k1] = range(b);
            if (col) for (i64 k = k0; k < k1; ++k) col[bptr[b] + k - k0] = indices[k];
            if (val && k1 > k0) std::memcpy(val + bptr[b], data + k0, sizeof(float) * (size_t)(k1 - k0));
        }
    });
    return 0;
}

// Z[B, h] = S @ W, S the batch pattern holding the column-ordered values cv, W [N, h].
// Column order: each row of W is read once per batch; thread t > 0 accumulates into
// scratch[(t-1) * B * h], then the blocks are reduced.
void ar_spmm(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
             const float* W, float* Z, float* scratch, int nt) {
    std::vector<i64> cut = column_cut(N, colptr, nt);
    const int used = (int)cut.size() - 1;
    run_split(cut, [&](i64 a, i64 e, int t) {
        float* z = t == 0 ? Z : scratch + (i64)(t - 1) * B * h;
        std::memset(z, 0, sizeof(float) * B * h);
        for (i64 j = a; j < e; ++j) {
            const float* __restrict w = W + j * h;
            i64 p = colptr[j];
            for (; p + 3 < colptr[j + 1]; p += 4) {  // four entries per read of W[j] (distinct rows)
                float* __restrict z0 = z + (i64)crow[p] * h;
                float* __restrict z1 = z + (i64)crow[p + 1] * h;
                float* __restrict z2 = z + (i64)crow[p + 2] * h;
                float* __restrict z3 = z + (i64)crow[p + 3] * h;
                const float v0 = cv[p], v1 = cv[p + 1], v2 = cv[p + 2], v3 = cv[p + 3];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) {
                    const float wc = w[c];
                    z0[c] += v0 * wc; z1[c] += v1 * wc; z2[c] += v2 * wc; z3[c] += v3 * wc;
                }
            }
            for (; p < colptr[j + 1]; ++p) {
                float* __restrict zz = z + (i64)crow[p] * h;
                const float v = cv[p];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) zz[c] += v * w[c];
            }
        }
    });
    reduce_rows(B, h, Z, scratch, used);
}

// D[N, h] = S^T @ G (S holding the column-ordered values cv), G [B, h]; every row of D is
// written (zero for columns without entries).
void ar_spmm_t(i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
               const float* G, float* D, int nt) {
    run_split(column_cut(N, colptr, nt), [&](i64 a, i64 e, int) {
        for (i64 j = a; j < e; ++j) column_sum(j, h, colptr, crow, cv, G, D + j * h);
    });
}

// out[k] = H[row_k] . W[col_k] (+ bias[col_k] when bias is not null) for every entry k, written
// at its CSR position cpos; H [B, h], W [N, h].
void ar_sddmm(i64 N, i64 h, const i64* colptr, const int32_t* crow, const i64* cpos,
              const float* H, const float* W, const float* bias, float* out, int nt) {
    std::vector<float> acc((size_t)colptr[N] + 1);  // column-ordered results, scattered at the end
    float* ac = acc.data();
    const bool quads = dots4_exact();
    run_split(column_cut(N, colptr, nt), [&](i64 a, i64 e, int) {
        for (i64 j = a; j < e; ++j) {
            const float* w = W + j * h;
            i64 p = colptr[j];
            if (quads) {
                for (; p + 3 < colptr[j + 1]; p += 4) {
                    const float* x[4];
                    for (int q = 0; q < 4; ++q) x[q] = H + (i64)crow[p + q] * h;
                    float s[4];
                    row_dot4(x, w, h, s);
                    for (int q = 0; q < 4; ++q) ac[p + q] = bias ? s[q] + bias[j] : s[q];
                }
            }
            for (; p < colptr[j + 1]; ++p) {
                const float s = row_dot(H + (i64)crow[p] * h, w, h);
                ac[p] = bias ? s + bias[j] : s;
            }
        }
        for (i64 p = colptr[a]; p < colptr[e]; ++p) out[cpos[p]] = ac[p];
    });
}

// Row order: Z[b, :] = sum_k vals[k] * W[cols[k], :] accumulated in place (no scratch); best
// when W is cache-resident (small n_in).
void ar_spmm_rows(i64 B, i64 h, const i64* indptr, const i64* cols, const float* vals,
                  const float* W, float* Z, int nt) {
    std::vector<i64> cut = even_cut(B, nt);
    run_split(cut, [&](i64 a, i64 e, int) {
        for (i64 b = a; b < e; ++b) {
            float* z = Z + b * h;
            std::memset(z, 0, sizeof(float) * h);
            for (i64 k = indptr[b]; k < indptr[b + 1]; ++k) {
                const float* w = W + cols[k] * h;
                const float v = vals[k];
                #pragma omp simd
                for (i64 c = 0; c < h; ++c) z[c] += v * w[c];
            }
        }
    });
}

// The decoder's backward in one column-ordered pass: dH = S_g @ W and dW = S_g^T @ H, with S_g
// the batch pattern holding the output gradients g (CSR order).  Every row of dW is written, and
// when db is not null, db[j] = the sum of column j's gradients (the decoder bias's gradient).
void ar_decode_backward(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const i64* cpos,
                        const float* g, const float* W, const float* H, float* dH, float* dW,
                        float* db, float* scratch, int nt) {
    const std::vector<i64> cut = column_cut(N, colptr, nt);
    const std::vector<float> gc = column_order(cut, colptr, cpos, g);
    decode_backward_pass(
        B, N, h, cut, colptr, crow, W, H, dH, scratch,
        [&](i64, i64 p, const float*, const float*, int) { return gc[(size_t)p]; },
        [&](i64 j, float*) { return dW + j * h; },
        [&](i64 j, const float*, float sb) { if (db) db[j] = sb; });
}

// ---------------------------------------------------------------- fused gradient + Adam passes
// torch.optim.Adam's update (amsgrad and maximize off, coupled weight decay) of one row of h floats
// with gradient g: m <- m + (1 - b1) (g' - m), v <- b2 v + (1 - b2) g'^2, w <- w - step_size m /
// (sqrt(v) / bc2_sqrt + eps), with g' = g + wd w; step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t).
// The scalars are rounded to float from double, as torch rounds its Python-float arguments: 1 - b1
// and 1 - b2 are computed in double first (1.0f - 0.999f differs from (float)(1 - 0.999) by 1e-5).
struct AdamHyper {
    float beta2, omb1, omb2, eps, wd, step_size, bc2_sqrt;
    AdamHyper(double b1, double b2, double e, double w, double ss, double bc2s)
        : beta2((float)b2), omb1((float)(1.0 - b1)), omb2((float)(1.0 - b2)), eps((float)e), wd((float)w),
          step_size((float)ss), bc2_sqrt((float)bc2s) {}
};
static inline void adam_row(i64 h, float* __restrict w, float* __restrict m, float* __restrict v,
                            const float* __restrict g, const AdamHyper& a) {
    const float omb1 = a.omb1, omb2 = a.omb2;
    #pragma omp simd
    for (i64 c = 0; c < h; ++c) {
        const float gr = g[c] + a.wd * w[c];
        const float mm = m[c] + omb1 * (gr - m[c]);
        const float vv = a.beta2 * v[c] + omb2 * (gr * gr);
        m[c] = mm; v[c] = vv;
        w[c] = w[c] - a.step_size * (mm / (std::sqrt(vv) / a.bc2_sqrt + a.eps));
    }
}
// The Adam passes weigh each column's row update as 4 entries when splitting columns over threads.
static const i64 ADAM_ROW_COST = 4;

// The encoder's weight gradient fused with its Adam step: for every row j of W (n_in, h),
// grad_j = sum_p cv[p] dZ[crow[p]] over column j's entries (zero for a column without entries), then
// Adam on (W[j], M[j], V[j]).  The gradient is never written to memory.
void ar_encode_backward_adam(i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
                             const float* dZ, float* W, float* M, float* V, double beta1, double beta2,
                             double eps, double wd, double step_size, double bc2_sqrt, int nt) {
    const AdamHyper a(beta1, beta2, eps, wd, step_size, bc2_sqrt);
    run_split(column_cut(N, colptr, nt, ADAM_ROW_COST), [&](i64 lo, i64 hi, int) {
        std::vector<float> gbuf((size_t)h);
        float* gr = gbuf.data();
        for (i64 j = lo; j < hi; ++j) {
            column_sum(j, h, colptr, crow, cv, dZ, gr);
            adam_row(h, W + j * h, M + j * h, V + j * h, gr, a);
        }
    });
}

// The decoder's backward fused with its weight's Adam step, in one column-ordered pass: with g the
// output gradients (CSR order), dH = S_g @ W (the weights *before* this step), db[j] = sum of
// column j's gradients, and grad_j = sum_p g[p] H[crow[p]] feeds Adam on (W[j], M[j], V[j]) right
// after row j has been read for dH.  Every row takes its Adam step.
void ar_decode_backward_adam(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const i64* cpos,
                             const float* g, float* W, const float* H, float* M, float* V, float* dH,
                             float* db, float* scratch, double beta1, double beta2, double eps, double wd,
                             double step_size, double bc2_sqrt, int nt) {
    const AdamHyper a(beta1, beta2, eps, wd, step_size, bc2_sqrt);
    const std::vector<i64> cut = column_cut(N, colptr, nt, ADAM_ROW_COST);
    const std::vector<float> gc = column_order(cut, colptr, cpos, g);
    decode_backward_pass(
        B, N, h, cut, colptr, crow, W, H, dH, scratch,
        [&](i64, i64 p, const float*, const float*, int) { return gc[(size_t)p]; },
        [&](i64, float* buf) { return buf; },
        [&](i64 j, const float* d, float sb) {
            db[j] = sb;
            adam_row(h, W + j * h, M + j * h, V + j * h, d, a);
        });
}

// The decoder's whole step in one column-ordered pass, for an identity output and the loss
// mult * (sum of squared errors at the observed entries): for each column j and each of its entries
// p (row b, target r = cv[p]), z = H[b] . W[j] + bias[j] (row_dot, as ar_sddmm), e = z - r, the
// output gradient g = mult * (2 e) (what autograd computes for that loss), then as
// ar_decode_backward_adam: dH[b] += g W[j], db[j] = the sum of column j's g, and Adam on
// (W[j], M[j], V[j]) with grad_j = sum_p g H[b].  W is read once per step instead of twice (the
// forward product and the backward).  Returns the sum of e^2 (accumulated in double, thread partial
// sums added in thread order, rounded to float); a non-finite value means the step diverged.
double ar_decode_step_adam(i64 B, i64 N, i64 h, const i64* colptr, const int32_t* crow, const float* cv,
                           float* W, const float* bias, const float* H, float* M, float* V, float* dH, float* db,
                           float* scratch, double mult, double beta1, double beta2, double eps, double wd,
                           double step_size, double bc2_sqrt, int nt) {
    const AdamHyper a(beta1, beta2, eps, wd, step_size, bc2_sqrt);
    const float mf = (float)mult;
    const std::vector<i64> cut = column_cut(N, colptr, nt, ADAM_ROW_COST);
    const i64 pad = 8;  // one cache line per thread's sum: no false sharing on the per-entry update
    std::vector<double> sse((size_t)(pad * ((i64)cut.size() - 1)), 0.0);
    struct Grad {  // an entry's output gradient from its output (a row_dot), one or four at a time
        const float* bias; const float* cv; double* sse; i64 pad; float mf; i64 h;
        float from(i64 j, i64 p, float s, int t) const {
            const float e = (s + bias[j]) - cv[p];
            sse[pad * t] += (double)e * (double)e;
            return mf * (2.0f * e);
        }
        float operator()(i64 j, i64 p, const float* hb, const float* w, int t) const {
            return from(j, p, row_dot(hb, w, h), t);
        }
        void quad(i64 j, i64 p, const float* const* hb, const float* w, int t, float* gv) const {
            float s[4];
            row_dot4(hb, w, h, s);
            for (int q = 0; q < 4; ++q) gv[q] = from(j, p + q, s[q], t);
        }
    } grad{bias, cv, sse.data(), pad, mf, h};
    auto row = [&](i64, float* buf) { return buf; };
    auto done = [&](i64 j, const float* d, float sb) {
        db[j] = sb;
        adam_row(h, W + j * h, M + j * h, V + j * h, d, a);
    };
    if (dots4_exact())
        decode_backward_pass<true>(B, N, h, cut, colptr, crow, W, H, dH, scratch, grad, row, done);
    else
        decode_backward_pass<false>(B, N, h, cut, colptr, crow, W, H, dH, scratch, grad, row, done);
    double total = 0.0;
    for (size_t t = 0; t < sse.size(); t += (size_t)pad) total += sse[t];
    return (double)(float)total;  // a float32 loss, as the two-pass path's: beyond its range it is inf
}

int ar_version() { return 6; }
// 1 where the kernels evaluate four entries' dot products at once (dots4_exact), else 0.
int ar_dots4_exact() { return dots4_exact() ? 1 : 0; }
// dots4_agree on x: 4 rows of h floats (tests/test_scale_native.py).
int ar_dots4_agree(const float* x, const float* w, i64 h) {
    const float* rows[4] = {x, x + h, x + 2 * h, x + 3 * h};
    return dots4_agree(rows, w, h);
}
int ar_openmp() {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
}
