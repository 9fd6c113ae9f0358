// One epoch of the minibatch SGD of baselines/sgd.py (biased MF), in C++, with the same arithmetic
// as the numpy loop it replaces, operation for operation, so that its factors, biases and errors
// are bitwise the same (compiled with -ffp-contract=off: no fused multiply-add, no reassociation).
//
// Per minibatch (ratings t = 0..m-1 of the visiting order; u, i their user and item):
//   dot_t   = einsum("nk,nk->n", P[u], Q[i])        numpy's SSE2 sum of products (einsum_dot)
//   e_t     = r_t - (((mu + bu[u]) + bi[i]) + dot_t)
//   bu[u]  += sum over the batch's ratings of u of lr_b * (e_t - reg_b * bu[u])   (old bu)
//   bi[i]  += likewise
//   P[u]   += sum of lr * ((e_t * Q[i]) - (P[u] * reg))                          (old P, Q)
//   Q[i]   += sum of lr * ((e_t * P[u]) - (Q[i] * reg))
// where a sum over the ratings of one row in one batch is numpy's np.add.reduceat of them in batch
// order: the first value plus the pairwise sum (numpy's pairwise_sum) of the others.
//
// The Python side (baselines/sgd.py, native_differs) checks these claims against its numpy loop once
// per process, on three small problems that exercise every path here, and trains with numpy where
// they fail on that machine's numpy.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace {

// numpy >= 1.22's einsum "nk,nk->n" on contiguous float64 rows (sum_of_products_contig_contig_
// outstride0_two, baseline SSE2 build) of NP row pairs a[p] . b[p]: per pair two lanes, four
// vectors per step chained from the last, a zero-padded tail vector, the lanes added, then added to
// the zeroed output.  NP > 1 keeps NP independent dependency chains in flight (the same operations
// per pair).
template <int NP>
inline void einsum_dots(const double* const a[NP], const double* const b[NP], int64_t n, double out[NP]) {
    double acc0[NP], acc1[NP];
    for (int p = 0; p < NP; ++p) acc0[p] = acc1[p] = 0.0;
    int64_t i = 0;
    for (; n - i >= 8; i += 8) {
        for (int p = 0; p < NP; ++p) {
            const double* x = a[p] + i;
            const double* y = b[p] + i;
            double x0 = x[6] * y[6] + acc0[p], x1 = x[7] * y[7] + acc1[p];
            x0 = x[4] * y[4] + x0;
            x1 = x[5] * y[5] + x1;
            x0 = x[2] * y[2] + x0;
            x1 = x[3] * y[3] + x1;
            acc0[p] = x[0] * y[0] + x0;
            acc1[p] = x[1] * y[1] + x1;
        }
    }
    for (; i < n; i += 2) {
        for (int p = 0; p < NP; ++p) {
            acc0[p] = a[p][i] * b[p][i] + acc0[p];
            acc1[p] = (i + 1 < n) ? a[p][i + 1] * b[p][i + 1] + acc1[p] : acc1[p] + 0.0;
        }
    }
    for (int p = 0; p < NP; ++p) out[p] = 0.0 + (acc0[p] + acc1[p]);
}

// numpy's pairwise_sum of x[0], x[stride], ..., x[(n-1) stride] (n >= 1)
double pairwise(const double* x, int64_t n, int64_t stride) {
    if (n < 8) {
        double res = -0.0;
        for (int64_t i = 0; i < n; ++i) res += x[i * stride];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = x[j * stride];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; ++j) r[j] += x[(i + j) * stride];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += x[i * stride];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise(x, n2, stride) + pairwise(x + n2 * stride, n - n2, stride);
}

// The batch positions grouped by row, each group in batch order: what np.argsort(kind="stable")
// of the row indices gives.
void group_by(const int64_t* rows, int64_t m, std::vector<int64_t>& order) {
    order.resize(m);
    for (int64_t t = 0; t < m; ++t) order[t] = t;
    std::stable_sort(order.begin(), order.end(), [rows](int64_t a, int64_t b) { return rows[a] < rows[b]; });
}

// target[row] += the group sums of `step` (m rows of k values; k = 1: the biases) by `rows`:
// first + pairwise(rest)
void scatter_rows(const int64_t* rows, int64_t m, int64_t k, const double* step, double* target,
                  const std::vector<int64_t>& order, std::vector<double>& rest) {
    for (int64_t g = 0; g < m;) {
        int64_t row = rows[order[g]], end = g + 1;
        while (end < m && rows[order[end]] == row) ++end;
        double* out = target + row * k;
        const double* first = step + order[g] * k;
        if (end - g == 1) {
            for (int64_t c = 0; c < k; ++c) out[c] = out[c] + first[c];
        } else {
            int64_t n_rest = end - g - 1;
            rest.resize(n_rest * k);
            for (int64_t j = 0; j < n_rest; ++j)
                std::memcpy(rest.data() + j * k, step + order[g + 1 + j] * k, k * sizeof(double));
            for (int64_t c = 0; c < k; ++c) out[c] = out[c] + (first[c] + pairwise(rest.data() + c, n_rest, k));
        }
        g = end;
    }
}

// the epoch itself (indexes checked by the caller); allocates everything before its first update
// and throws std::bad_alloc (or std::length_error) when it cannot
void epoch(int64_t n, int64_t batch, int64_t k, const int64_t* visit, const int64_t* users, const int64_t* items,
           const double* ratings, double* P, double* Q, double* bu, double* bi, double mu, double lr, double reg,
           double lr_b, double reg_b, int biased, double* err) {
    std::vector<int64_t> u(batch), it(batch), by_u, by_i;
    std::vector<double> step_p(batch * k), step_q(batch * k), vals(batch), dots(batch), rest;
    double* dot = dots.data();
    by_u.reserve(batch);  // every allocation before the first update: none in the loop
    by_i.reserve(batch);
    rest.reserve(batch * k);
    for (int64_t s = 0; s < n; s += batch) {
        const int64_t m = std::min(batch, n - s);
        double* e = err + s;
        for (int64_t t = 0; t < m; ++t) {
            u[t] = users[visit[s + t]];
            it[t] = items[visit[s + t]];
        }
        int64_t t = 0;
        for (; t + 4 <= m; t += 4) {
            const double* a[4] = {P + u[t] * k, P + u[t + 1] * k, P + u[t + 2] * k, P + u[t + 3] * k};
            const double* b[4] = {Q + it[t] * k, Q + it[t + 1] * k, Q + it[t + 2] * k, Q + it[t + 3] * k};
            einsum_dots<4>(a, b, k, dot + t);
        }
        for (; t < m; ++t) {
            const double* a[1] = {P + u[t] * k};
            const double* b[1] = {Q + it[t] * k};
            einsum_dots<1>(a, b, k, dot + t);
        }
        for (t = 0; t < m; ++t) e[t] = ratings[visit[s + t]] - (((mu + bu[u[t]]) + bi[it[t]]) + dot[t]);
        group_by(u.data(), m, by_u);
        group_by(it.data(), m, by_i);
        if (biased) {
            for (int64_t t = 0; t < m; ++t) vals[t] = lr_b * (e[t] - reg_b * bu[u[t]]);
            scatter_rows(u.data(), m, 1, vals.data(), bu, by_u, rest);
            for (int64_t t = 0; t < m; ++t) vals[t] = lr_b * (e[t] - reg_b * bi[it[t]]);
            scatter_rows(it.data(), m, 1, vals.data(), bi, by_i, rest);
        }
        for (int64_t t = 0; t < m; ++t) {
            const double* pu = P + u[t] * k;
            const double* qi = Q + it[t] * k;
            double* sp = step_p.data() + t * k;
            double* sq = step_q.data() + t * k;
            const double et = e[t];
            for (int64_t c = 0; c < k; ++c) {
                sp[c] = ((et * qi[c]) - (pu[c] * reg)) * lr;
                sq[c] = ((et * pu[c]) - (qi[c] * reg)) * lr;
            }
        }
        scatter_rows(u.data(), m, k, step_p.data(), P, by_u, rest);
        scatter_rows(it.data(), m, k, step_q.data(), Q, by_i, rest);
    }
}

}  // namespace

extern "C" {

// One epoch: the ratings (n_ratings of them) in `visit` order (n positions), minibatches of
// `batch`; P (n_users, k), Q (n_items, k), bu (n_users), bi (n_items) updated in place; err (n)
// receives every rating's error in visiting order.  Returns 0; 1 when an index is out of range, 2
// when the scratch memory cannot be allocated (nothing updated in either case).
int mf_sgd_epoch(int64_t n, int64_t batch, int64_t k, const int64_t* visit, int64_t n_ratings, const int64_t* users,
                 const int64_t* items, const double* ratings, int64_t n_users, int64_t n_items, double* P,
                 double* Q, double* bu, double* bi, double mu, double lr, double reg, double lr_b, double reg_b,
                 int biased, double* err) {
    for (int64_t t = 0; t < n; ++t) {
        int64_t j = visit[t];
        if (j < 0 || j >= n_ratings || users[j] < 0 || users[j] >= n_users || items[j] < 0 || items[j] >= n_items)
            return 1;
    }
    batch = std::max<int64_t>(1, std::min(batch, n));  // a batch larger than the epoch needs no more room
    try {
        epoch(n, batch, k, visit, users, items, ratings, P, Q, bu, bi, mu, lr, reg, lr_b, reg_b, biased, err);
    } catch (const std::exception&) {  // out of memory: never across the C boundary
        return 2;
    }
    return 0;
}

}  // extern "C"
