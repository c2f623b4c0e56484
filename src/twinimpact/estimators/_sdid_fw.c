/* Frank-Wolfe iterations of synthetic DiD's weight problems, one problem after another.
 *
 * The compiled form of the loop of twinimpact.estimators._sdid_solver.fw_gram_sets (read
 * its docstring first): the same Gram-form step, with the same floating-point operations
 * in the same order for each problem, including the lazy common scale factor sigma of x
 * and of the half-gradient. The NumPy batch computes the initial state (h, y, the three
 * scalars) and hands it over; this file only iterates. One difference: the NumPy batch
 * rescales every problem of the batch when any problem's sigma drops below 1e-100, this
 * loop rescales a problem when its own sigma does (a change of rounding only).
 *
 * Loaded with ctypes (twinimpact.estimators._sdid_solver._compiled_fw); the module init
 * below only makes the file a valid extension module for setuptools.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#if defined(_WIN32)
#define TI_EXPORT __declspec(dllexport)
#else
#define TI_EXPORT __attribute__((visibility("default")))
#endif

/* value of A'b on a masked coordinate (_sdid_solver._MASKED) */
#define TI_MASKED (-1e200)

/* B problems with k coordinates each.
 * bank: rows of (G + eta I); problem b reads rows base[b] .. base[b] + k - 1
 * gd:   diagonal entry of each bank row (indexed like bank rows)
 * Atb:  (B, k) A'b per problem (TI_MASKED where the problem may not go)
 * bb, eta, md2n: per problem b'b, n zeta^2, n min_decrease^2
 * h, y: (B, k) in: the initial half-gradient (G + eta I)x - A'b and x; out: y = weights
 * cp, xx, p: per problem x'(G + eta I)x, |x|^2, x'A'b (in; overwritten)
 * n_iter, conv: per problem iterations run, stopping rule met before max_iter */
TI_EXPORT void ti_fw_gram(int64_t B, int64_t k, const double *bank, const int64_t *base,
                          const double *gd, const double *Atb, const double *bb,
                          const double *eta, const double *md2n, int64_t max_iter,
                          double *h, double *y, double *cp_, double *xx_, double *p_,
                          int64_t *n_iter, uint8_t *conv)
{
    const double step_max = 1.0 - 1.1102230246251565e-16;   /* 1 - 2^-53 (_STEP_MAX) */
    for (int64_t b = 0; b < B; b++) {
        const double *at = Atb + b * k;
        double *hb = h + b * k, *yb = y + b * k;
        double cp = cp_[b], xx = xx_[b], p = p_[b];
        double sigma = 1.0, vprev = INFINITY;
        int64_t t = 0;
        uint8_t done = 0;
        for (;;) {
            int64_t i = 0;
            double hm = hb[0];
            for (int64_t j = 1; j < k; j++)
                if (hb[j] < hm) { hm = hb[j]; i = j; }       /* first smallest (argmin) */
            const double *row = bank + (base[b] + i) * k;
            double hv = hb[i] * sigma, xi = yb[i] * sigma, a = at[i];
            double g = gd[base[b] + i];
            double q = hv + a;                               /* ((G + eta I) x)_i */
            double pa = (p + a) * 0.5;
            double den = cp - 2.0 * q;
            den += g;                                        /* (e_i - x)'(G + eta I)(e_i - x) */
            double s = cp - p;
            s -= hv;
            s /= den;                                        /* -hg'(e_i - x) / den */
            s = (s > 0.0) ? s : 0.0;                         /* np.fmax(s, 0): NaN -> 0 */
            s = (s < step_max) ? s : step_max;
            if (!(den > 0.0)) s *= 0.0;
            double u = 1.0 - s, s2 = 2.0 * s, ss = s * s;
            /* u (u S + 2 s V) + s^2 C with S = (cp, xx, p), V = (q, x_i, pa), C = (g, 1, a) */
            double tc = cp * u, tx = xx * u, tp = p * u;
            tc += q * s2; tx += xi * s2; tp += pa * s2;
            tc *= u; tx *= u; tp *= u;
            tc += g * ss; tx += ss; tp += a * ss;
            cp = tc; xx = tx; p = tp;
            sigma *= u;
            double c = s / sigma;
            for (int64_t j = 0; j < k; j++) {
                double r = row[j] - at[j];
                r *= c;
                hb[j] += r;
            }
            yb[i] += c;
            double e = eta[b] * xx;
            double val = cp - e;
            val -= p;
            val -= p;
            val += bb[b];
            val = (val < 0.0) ? 0.0 : val;                   /* np.maximum(val, 0) */
            val += e;                  /* n (zeta^2 |x|^2 + |A x - b|^2 / n) */
            t++;
            if (t % 8 == 0 && sigma < 1e-100) {
                for (int64_t j = 0; j < k; j++) { yb[j] *= sigma; hb[j] *= sigma; }
                sigma = 1.0;
            }
            if (t < 2) {
                if (t < max_iter) { vprev = val; continue; }
                done = 0;
                break;
            }
            int cont = (vprev - val) > md2n[b];
            if (t < max_iter && cont) { vprev = val; continue; }
            done = (uint8_t)!cont;
            break;
        }
        for (int64_t j = 0; j < k; j++) yb[j] *= sigma;
        n_iter[b] = t;
        conv[b] = done;
    }
}

static struct PyModuleDef ti_sdid_fw_module = {
    PyModuleDef_HEAD_INIT, "_sdid_fw",
    "Compiled Frank-Wolfe loop of synthetic DiD (loaded with ctypes; see _sdid_solver).",
    -1, NULL, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__sdid_fw(void) { return PyModule_Create(&ti_sdid_fw_module); }
