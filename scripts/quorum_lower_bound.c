/*
 * Exhaustive search for k-element difference covers of Z_v (cyclic quorum sets).
 *
 * One-off verification tool, compiled and driven by scripts/prove_quorum_lower_bounds.py;
 * neither the package nor CI needs it.
 *
 * A set S of Z_v is a difference cover when every nonzero residue is s - t for some s, t in S.
 * Residues d and v - d are covered together, so what must be covered are the C = floor(v / 2)
 * classes {d, -d}, d = 1..floor(v/2), and a k-set has P = k(k-1)/2 unordered pairs, each
 * covering exactly one class.  Call slack = P - C.  Every pair that hits an already covered
 * class is "wasted", so a cover has exactly `slack` wasted pairs and every subset of a cover
 * has at most `slack` wasted pairs among its own pairs: that is the only pruning rule.  It is
 * exact and monotone (adding an element never removes waste), so it never cuts off a cover.
 *
 * Normalization (no cover is lost):
 *   - class {1, -1} is covered, so some a, b in S have a - b = 1; translating by -b puts
 *     0 and 1 in S.  S = {0, 1, a3 < a4 < ... < ak} with 2 <= a3.
 *   - x -> 1 - x maps covers with {0, 1} to covers with {0, 1} and sends a3, ak to
 *     v + 1 - ak, v + 1 - a3; one of the two sets has a3 + ak <= v + 1.
 * Elements are added in increasing order.
 *
 * Usage: quorum_lower_bound V K [all|first] [A3_MIN A3_MAX]
 *   prints one JSON object: v, k, classes, pairs, slack, a3_min, a3_max, found (first cover or
 *   null), covers (number found; all of them when "all" is given, else 0 or 1), nodes (calls
 *   of the recursive search), complete (true: the whole normalized space was searched).
 *   A3_MIN..A3_MAX restricts the third element a3 to that range (default: every a3), so one
 *   case can be split into independent parts whose node counts add up (each part counts the
 *   root call once); the parts of a split case cover the whole space exactly once.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int V, K, SLACK, ALL;
static int cls[256];
static uint64_t FULL;
static int e[64];
static int first[64];
static long long nodes = 0, covers = 0;
static int have_first = 0, stop = 0;
static int A3_MIN = 2, A3_MAX = 1 << 30;

static void rec(int j, int last, uint64_t covered, int waste, int top) {
    nodes++;
    if (j == K) {
        if (covered == FULL) {
            covers++;
            if (!have_first) {
                for (int i = 0; i < K; i++) first[i] = e[i];
                have_first = 1;
            }
            if (!ALL) stop = 1;
        }
        return;
    }
    int r = K - j;
    for (int x = last + 1; x <= top - (r - 1) && !stop; x++) {
        uint64_t m = covered;
        int w = waste;
        int i;
        for (i = 0; i < j; i++) {
            uint64_t b = (uint64_t)1 << cls[x - e[i]];
            if (m & b) {
                if (++w > SLACK) break;
            }
            m |= b;
        }
        if (i < j) continue;
        if (j == 2 && x < A3_MIN) continue;
        if (j == 2 && x > A3_MAX) break;
        e[j] = x;
        /* choosing a3 fixes the largest allowed element: a3 + ak <= v + 1 */
        rec(j + 1, x, m, w, j == 2 ? (V + 1 - x < V - 1 ? V + 1 - x : V - 1) : top);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s V K [all|first] [A3_MIN A3_MAX]\n", argv[0]);
        return 2;
    }
    V = atoi(argv[1]);
    K = atoi(argv[2]);
    ALL = argc > 3 && argv[3][0] == 'a';
    if (argc > 5) {
        A3_MIN = atoi(argv[4]);
        A3_MAX = atoi(argv[5]);
    }
    if (V < 4 || V > 127 || K < 3 || K > 60 || K > V) {
        fprintf(stderr, "need 4 <= V <= 127 and 3 <= K <= min(V, 60), got V=%d K=%d\n", V, K);
        return 2;
    }
    int C = V / 2;
    int P = K * (K - 1) / 2;
    SLACK = P - C;
    for (int d = 1; d < V; d++) cls[d] = d <= V - d ? d : V - d;
    FULL = 0;
    for (int c = 1; c <= C; c++) FULL |= (uint64_t)1 << c;
    if (SLACK >= 0) {
        e[0] = 0;
        e[1] = 1;
        rec(2, 1, (uint64_t)1 << 1, 0, K == 3 ? (V + 1) / 2 : V - 1);  /* K = 3: 2 a3 <= v + 1 */
    }
    printf("{\"v\": %d, \"k\": %d, \"classes\": %d, \"pairs\": %d, \"slack\": %d, "
           "\"a3_min\": %d, \"a3_max\": %d, \"found\": ", V, K, C, P, SLACK, A3_MIN,
           A3_MAX > V ? V : A3_MAX);
    if (have_first) {
        printf("[");
        for (int i = 0; i < K; i++) printf(i ? ", %d" : "%d", first[i]);
        printf("]");
    } else {
        printf("null");
    }
    printf(", \"covers\": %lld, \"nodes\": %lld, \"complete\": %s}\n", covers, nodes,
           (ALL || !have_first) ? "true" : "false");
    return 0;
}
