//! Minimum-cost assignment (the Hungarian method, as shortest augmenting
//! paths with row and column potentials: O(n²·m) for n ≤ m).
//!
//! Deterministic: a fixed sequence of float operations over the matrix in
//! the order given, and on equal costs the lowest column index wins, so the
//! same matrix always gives the same assignment.

/// For a `rows × cols` matrix of finite costs (row-major), the assignment
/// of least total cost, as the column given to each row. Every row gets a
/// column when `rows <= cols`, every column a row otherwise.
pub(super) fn assign(cost: &[f64], rows: usize, cols: usize) -> Vec<Option<usize>> {
    debug_assert_eq!(cost.len(), rows * cols, "cost matrix size");
    if rows <= cols {
        solve(rows, cols, |r, c| cost[r * cols + c]).into_iter().map(Some).collect()
    } else {
        // The method needs at least as many columns as rows: solve the
        // transpose and turn its answer round.
        let mut out = vec![None; rows];
        for (c, r) in solve(cols, rows, |c, r| cost[r * cols + c]).into_iter().enumerate() {
            out[r] = Some(c);
        }
        out
    }
}

/// The column for each of `n` rows, `n <= m`. Rows and columns are
/// 1-based inside, with row 0 and column 0 as the search's virtual start.
fn solve(n: usize, m: usize, a: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    // Potentials: u[i] + v[j] <= a(i, j) throughout, with equality on the
    // assigned pairs, which is what makes the final assignment optimal.
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    // row_of[j]: the row holding column j (0: none).
    let mut row_of = vec![0usize; m + 1];
    // way[j]: the column before j on the current shortest path.
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        // Grow a shortest-path tree (Dijkstra on reduced costs) from row i
        // until it reaches a free column, then flip the path.
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let reduced = a(i0 - 1, j - 1) - u[i0] - v[j];
                if reduced < min_to[j] {
                    min_to[j] = reduced;
                    way[j] = j0;
                }
                if min_to[j] < delta {
                    delta = min_to[j];
                    j1 = j;
                }
            }
            // With finite costs and a free column left (n <= m) some column
            // is always reachable: j1 != 0.
            for j in 0..=m {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col_of = vec![0; n];
    for j in 1..=m {
        if row_of[j] != 0 {
            col_of[row_of[j] - 1] = j - 1;
        }
    }
    col_of
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny LCG (Knuth's MMIX constants): reproducible input, no crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Least total cost over every assignment, by trying them all.
    fn brute(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f64], rows: usize, cols: usize, r: usize, used: &mut Vec<bool>) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            // With more rows than columns a row may go without.
            let free = rows - r > cols - used.iter().filter(|u| **u).count();
            if free {
                best = go(cost, rows, cols, r + 1, used);
            }
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[r * cols + c] + go(cost, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, rows, cols, 0, &mut vec![false; cols])
    }

    /// Checks the assignment is one (each column at most once, the right
    /// number of pairs) and returns its cost.
    fn total(cost: &[f64], rows: usize, cols: usize, got: &[Option<usize>]) -> f64 {
        assert_eq!(got.len(), rows);
        let mut seen = vec![false; cols];
        let mut sum = 0.0;
        for (r, c) in got.iter().enumerate() {
            if let Some(c) = *c {
                assert!(!seen[c], "column {c} twice in {got:?}");
                seen[c] = true;
                sum += cost[r * cols + c];
            }
        }
        assert_eq!(got.iter().flatten().count(), rows.min(cols), "{got:?}");
        sum
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut rng = Lcg(7);
        for round in 0..3000 {
            let (rows, cols) = (rng.below(7) as usize, rng.below(7) as usize);
            // Every third matrix from few values: many ties.
            let cost: Vec<f64> = (0..rows * cols)
                .map(|_| if round % 3 == 0 { rng.below(3) as f64 } else { rng.below(1_000_000) as f64 / 1e6 })
                .collect();
            let got = assign(&cost, rows, cols);
            let sum = total(&cost, rows, cols, &got);
            let best = brute(&cost, rows, cols);
            assert!((sum - best).abs() < 1e-9, "{rows}x{cols} {cost:?}: {got:?} costs {sum}, best {best}");
            assert_eq!(assign(&cost, rows, cols), got, "not deterministic");
        }
    }

    #[test]
    fn known_cases() {
        // (name, rows, cols, costs, expected column per row)
        type Case<'a> = (&'a str, usize, usize, &'a [f64], &'a [Option<usize>]);
        let cases: &[Case] = &[
            ("empty", 0, 0, &[], &[]),
            ("no columns", 2, 0, &[], &[None, None]),
            ("no rows", 0, 3, &[], &[]),
            ("one", 1, 1, &[5.0], &[Some(0)]),
            ("greedy would be wrong", 2, 2, &[1.0, 2.0, 2.0, 10.0], &[Some(1), Some(0)]),
            ("wide", 2, 3, &[9.0, 1.0, 9.0, 9.0, 9.0, 1.0], &[Some(1), Some(2)]),
            ("tall", 3, 2, &[9.0, 9.0, 1.0, 9.0, 9.0, 1.0], &[None, Some(0), Some(1)]),
            ("ties: lowest column first", 2, 2, &[1.0, 1.0, 1.0, 1.0], &[Some(0), Some(1)]),
            ("negative costs", 2, 2, &[-1.0, 0.0, 0.0, -1.0], &[Some(0), Some(1)]),
        ];
        for (name, rows, cols, cost, want) in cases {
            assert_eq!(assign(cost, *rows, *cols), *want, "{name}");
        }
    }

    #[test]
    fn large_matrix_is_consistent() {
        // Too big for brute force: the assignment must still be complete
        // and no single swap of two rows' columns may lower the cost.
        let mut rng = Lcg(11);
        let (rows, cols) = (60, 45);
        let cost: Vec<f64> = (0..rows * cols).map(|_| rng.below(1000) as f64).collect();
        let got = assign(&cost, rows, cols);
        total(&cost, rows, cols, &got);
        for a in 0..rows {
            for b in 0..rows {
                let (Some(ca), Some(cb)) = (got[a], got[b]) else { continue };
                let now = cost[a * cols + ca] + cost[b * cols + cb];
                let swapped = cost[a * cols + cb] + cost[b * cols + ca];
                assert!(swapped >= now - 1e-9, "rows {a},{b}");
            }
            // Nor may a row left without a column take one over.
            if got[a].is_none() {
                for (b, cb) in got.iter().enumerate().filter_map(|(b, c)| Some((b, (*c)?))) {
                    assert!(cost[a * cols + cb] >= cost[b * cols + cb], "row {a} for row {b}");
                }
            }
        }
    }
}
