// Exact CPU watershed (scikit-image 0.26 semantics) and the CPU run of the device algorithm.
//
// scikit-image floods from all marker pixels with a binary heap keyed by (value, age): markers are
// pushed in raster order with age 0, every later push gets a fresh, increasing age, and a pushed pixel
// takes key max(value, key of the popped neighbour) and (without watershed lines) its label right away.
//
// Without watershed lines:
//   Components. A pixel is only pushed by a neighbour of its own mask component, so components flood
//   independently (OpenMP, one component per task). They are found as row runs joined by union-find
//   (core/runs.h). A component whose markers carry one label is filled with it (no flood). A marker
//   with no unreached neighbour is left out of the queue (its pop pushes nothing; ages count pushes).
//   Queue. Each remaining component floods on a LevelQueue (core/watershed.h): equal-width buckets of
//   its key range, FIFO lists in age order, sorted by key when the cursor reaches them, a FIFO for
//   plateaus and a small heap for keys landing in the current bucket: exactly (key, age) order with O(1)
//   pushes and no rescans.
//   Ties. Ages are unique except for the markers (all age 0): skimage pops equal-valued markers in an
//   order that depends on its whole heap history (all components included). The per-component queues
//   use any order, record every pixel's parent, and check every contest (a pixel whose first popped
//   neighbour has the same key as a later popped neighbour of another label): walking both parent chains
//   while the keys agree decides the contest by keys or a marker-vs-pushed age, or ends at two
//   equal-valued markers of different labels, whose order then decides a label. Only that last case is
//   flagged (ties among one label's markers cannot change labels: the chains through them have the same
//   keys). If a contest is flagged, the flood is redone with an exact replica of skimage's global heap
//   (heap_general.pxi: same sift-up/sift-down, strict comparisons) up to the largest flagged key, the
//   queued items handed to the component queues; a second flag (not seen on any test input) replays up
//   to the largest value shared by markers of different labels in one component, above which nothing
//   can be flagged. Cost: real MoNuSeg -EDT inputs flag on about half of the images (equal peaks of
//   d inside one component), the replica then covers the pixels below the tied value (15-60 %).
// The watershed-line mode labels at pop time and may push a pixel several times; it always uses the
// global replica (it is not on the hot path of the pipelines).
#include "core/watershed.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "core/runs.h"
#include "kernels/exec_cpu.h"
#include "kernels/watershed.h"

namespace nf {
namespace ws_detail {

namespace {

struct Padded {
  int64_t Wp, Np;
  int nn;
  int64_t off[8];
  Padded(int64_t H, int64_t W, int connectivity) {
    Wp = W + 2;
    Np = (H + 2) * Wp;
    const int64_t o[8] = {-Wp, -1, 1, Wp, -Wp - 1, -Wp + 1, Wp - 1, Wp + 1};
    nn = connectivity >= 2 ? 8 : 4;
    for (int k = 0; k < 8; ++k) off[k] = o[k];
  }
};

// ---- the flood without watershed lines ------------------------------------------------------------

// Per-thread scratch buffers reused across calls (fresh multi-megabyte allocations cost page faults,
// about as much as the flood itself on a 1000x1000 image); buffers above kKeepBytes are released.
struct Workspace {
  static constexpr size_t kSlots = 4;
  static constexpr size_t kKeepBytes = size_t(64) << 20;
  std::unique_ptr<unsigned char[]> buf[kSlots];
  size_t cap[kSlots] = {};
  template <class T>
  T* get(size_t slot, int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    if (cap[slot] < bytes) {
      buf[slot].reset();
      buf[slot].reset(new unsigned char[bytes]);
      cap[slot] = bytes;
    }
    return reinterpret_cast<T*>(buf[slot].get());
  }
  void trim() {
    for (size_t i = 0; i < kSlots; ++i)
      if (cap[i] > kKeepBytes) {
        buf[i].reset();
        cap[i] = 0;
      }
  }
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}


// State of one call. lab: -1 blocked (border or outside the mask), 0 not yet reached, > 0 label.
// val: the image; once a pixel is pushed, its key (max(value, key of the pixel that pushed it)).
// nxt: bucket links during the flood; before it, a start's age. par: the pixel that pushed each pixel
// (markers: themselves), for the tie check.
template <class L, class I>
struct State {
  const Padded* P;
  int64_t H, W;
  L* lab;
  double* val;
  I* nxt;
  I* par;
  double K;  // equal-valued markers with key <= K were popped in scikit-image's exact order (replica)
};

// Mask components: runs of in-mask pixels per row joined by union-find (core/runs.h).
using runs::Runs;

// One component to flood: its starts (markers, or the replica's queued items) in starts[first, first + n).
struct Component {
  int64_t first, nstart, count;
  double vmin, vmax;
};

// Fills the padded state and the runs from the inputs; returns the marker pixels in raster order and
// their runs (par = themselves, age 0).
template <class L, class I>
void init_state(const State<L, I>& S, const double* image, const L* markers, const uint8_t* mask, Runs<I>& R,
                std::vector<I>& mk, std::vector<I>& mk_run) {
  const int64_t H = S.H, W = S.W, Wp = S.P->Wp, Np = S.P->Np;
  std::fill(S.lab, S.lab + Wp + 1, L(-1));
  std::fill(S.lab + Np - Wp - 1, S.lab + Np, L(-1));
  R.clear(H);
  mk.clear();
  mk_run.clear();
  for (int64_t r = 0; r < H; ++r) {
    const int64_t pr = (r + 1) * Wp;
    S.lab[pr + W + 1] = S.lab[pr + W + 2] = L(-1);  // right pad of this row, left pad of the next
    std::copy(image + r * W, image + (r + 1) * W, S.val + pr + 1);
    const L* mr = markers + r * W;
    const uint8_t* kr = mask ? mask + r * W : nullptr;
    L* lr = S.lab + pr + 1;
    R.row_first[r] = static_cast<int64_t>(R.pos.size());
    if (kr) {  // branch-free: in ? max(m, 0) : -1
      for (int64_t c = 0; c < W; ++c) {
        const L in = static_cast<L>(kr[c] != 0);
        const L m = mr[c];
        lr[c] = ((m & ~(m >> (sizeof(L) * 8 - 1))) & -in) + (in - 1);
      }
    } else {
      for (int64_t c = 0; c < W; ++c) lr[c] = mr[c] > 0 ? mr[c] : L(0);
    }
    int64_t c = 0;
    while (c < W) {
      if (kr) {
        c = runs::skip_bytes<false>(kr, c, W);
        if (c == W) break;
      }
      const int64_t start = c;
      if (kr) {
        c = runs::skip_bytes<true>(kr, c, W);
      } else {
        c = W;
      }
      const I run = static_cast<I>(R.pos.size());
      R.add(static_cast<I>(pr + 1 + start), c - start);
      for (int64_t t = start; t < c; ++t) {
        if (lr[t] > 0) {
          mk.push_back(static_cast<I>(pr + 1 + t));
          mk_run.push_back(run);
        }
      }
    }
  }
  R.row_first[H] = static_cast<int64_t>(R.pos.size());
  for (const I p : mk) {
    S.nxt[p] = 0;
    S.par[p] = p;
  }
}

// Groups the starts (pixels with their runs, in the order wanted inside a component) by component and
// returns the components to flood, their starts in `starts`. Two shortcuts, both exact:
//   - in a component whose starts carry one label only, every unreached pixel gets that label (every
//     pixel of a component that holds a start is reached, and only that label can reach it): no flood;
//   - a start none of whose neighbours is still unreached pushes nothing when popped (pushes, not pops,
//     advance the age counter): it is left out (the inside of large marker blobs).
template <class L, class I>
std::vector<Component> group_components(const State<L, I>& S, Runs<I>& R, const std::vector<I>& px,
                                        const std::vector<I>& px_run, std::vector<I>& starts) {
  const int nn = S.P->nn;
  const int64_t* off = S.P->off;
  L* lab = S.lab;
  const int64_t nr = static_cast<int64_t>(R.pos.size());
  std::vector<I> comp_of(static_cast<size_t>(nr), I(-1));
  std::vector<L> label_of;   // a component's first label
  std::vector<uint8_t> multi;  // more than one label
  std::vector<I> sc(px.size());
  int64_t nc = 0;
  for (size_t i = 0; i < px.size(); ++i) {
    const I root = R.find(px_run[i]);
    I c = comp_of[root];
    if (c < 0) {
      c = comp_of[root] = static_cast<I>(nc++);
      label_of.push_back(lab[px[i]]);
      multi.push_back(0);
    } else if (lab[px[i]] != label_of[c]) {
      multi[c] = 1;
    }
    sc[i] = c;
  }
  // Flooded components get consecutive ids; single-label ones are filled.
  std::vector<I> fid(static_cast<size_t>(nc), I(-1));
  int64_t nf = 0;
  for (int64_t c = 0; c < nc; ++c)
    if (multi[c]) fid[c] = static_cast<I>(nf++);
  std::vector<Component> comps(static_cast<size_t>(nf),
                               Component{0, 0, 0, std::numeric_limits<double>::infinity(),
                                         -std::numeric_limits<double>::infinity()});
  const double* val = S.val;
  for (int64_t i = 0; i < nr; ++i) {
    const I c = comp_of[R.find(static_cast<I>(i))];
    if (c < 0) continue;
    const int32_t n = R.len[i];
    if (!multi[c]) {  // unreached pixels only (after the replica others may hold other labels)
      L* lr = lab + R.pos[i];
      const L l = label_of[c];
      for (int32_t t = 0; t < n; ++t) lr[t] = lr[t] == 0 ? l : lr[t];
      continue;
    }
    Component& k = comps[fid[c]];
    const double* v = val + R.pos[i];
    double lo = k.vmin, hi = k.vmax;
    for (int32_t t = 0; t < n; ++t) {
      lo = v[t] < lo ? v[t] : lo;
      hi = v[t] > hi ? v[t] : hi;
    }
    k.vmin = lo;
    k.vmax = hi;
    k.count += n;
  }
  if (nf == 0) {
    starts.clear();
    return comps;
  }
  std::vector<uint8_t> keep(px.size(), 0);
  for (size_t i = 0; i < px.size(); ++i) {
    if (!multi[sc[i]]) continue;
    const I p = px[i];
    for (int k = 0; k < nn; ++k)
      if (lab[p + off[k]] == 0) {
        keep[i] = 1;
        ++comps[fid[sc[i]]].nstart;
        break;
      }
  }
  int64_t acc = 0;
  std::vector<int64_t> fill(static_cast<size_t>(nf));
  for (int64_t c = 0; c < nf; ++c) {
    comps[c].first = acc;
    fill[c] = acc;
    acc += comps[c].nstart;
  }
  starts.resize(static_cast<size_t>(acc));
  for (size_t i = 0; i < px.size(); ++i)
    if (keep[i]) starts[fill[fid[sc[i]]]++] = px[i];
  return comps;
}

template <class I>
struct Scratch {
  LevelQueue<I> q;
  bool flagged = false;
  double flag_key = -std::numeric_limits<double>::infinity();
};

// Whether two pixels of different labels and equal keys, x and y, were ordered by the order of two
// equal-valued markers (then the result may depend on that order, which only scikit-image's global heap
// knows): walks both parent chains while the keys agree. Pushed pixels of equal keys are ordered by age,
// i.e. by the pop order of their parents; a marker (age 0) precedes any pushed pixel of its key.
template <class L, class I>
void check_contest(const State<L, I>& S, I x, I y, Scratch<I>& sc) {
  const double* val = S.val;
  const I* par = S.par;
  while (true) {
    const I px = par[x], py = par[y];
    const bool mx = px == x, my = py == y;
    if (mx || my) {
      if (mx && my && val[x] > S.K) {
        sc.flagged = true;
        sc.flag_key = std::max(sc.flag_key, val[x]);
      }
      return;
    }
    x = px;
    y = py;
    if (val[x] != val[y]) return;  // decided by the keys
  }
}

// Floods one component from its starts in (key, age) order, recording parents and checking every
// contest between equal keys of different labels (a pixel whose first popped neighbour ties with a
// later popped neighbour of another label).
template <int NN, class L, class I>
void flood_component(const State<L, I>& S, const Component& c, const I* starts, Scratch<I>& sc) {
  const int64_t* off = S.P->off;
  L* lab = S.lab;
  double* val = S.val;
  I* par = S.par;
  LevelQueue<I>& q = sc.q;
  q.reset(val, S.nxt, c.vmin, c.vmax, c.count);
  for (int64_t i = 0; i < c.nstart; ++i) q.push_start(starts[i]);
  I p;
  while (q.pop(p)) {
    const double cur = val[p];
    const L lp = lab[p];
    for (int k = 0; k < NN; ++k) {
      const I n = static_cast<I>(p + off[k]);
      const L ln = lab[n];
      if (ln == 0) {
        lab[n] = lp;
        par[n] = p;
        const double v = val[n];
        if (v <= cur) {
          val[n] = cur;
          q.push_level(n);
        } else {
          q.push_above(n, v);
        }
      } else if (ln != lp && ln > 0) {
        const I x = par[n];
        if (x != n && val[x] == cur) check_contest(S, x, p, sc);
      }
    }
  }
}

// Floods the components; returns whether the tie check flagged a contest decided by the order of
// equal-valued markers above S.K (the largest such key in *flag_key).
template <class L, class I>
bool flood_components(const State<L, I>& S, const std::vector<Component>& comps, const std::vector<I>& starts,
                      double* flag_key) {
  const int64_t nc = static_cast<int64_t>(comps.size());
  bool flagged = false;
  double fk = -std::numeric_limits<double>::infinity();
  const bool eight = S.P->nn == 8;
#pragma omp parallel if (nc > 1 && omp_get_max_threads() > 1)
  {
    Scratch<I> sc;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t i = 0; i < nc; ++i) {
      if (eight) {
        flood_component<8>(S, comps[i], starts.data() + comps[i].first, sc);
      } else {
        flood_component<4>(S, comps[i], starts.data() + comps[i].first, sc);
      }
    }
#pragma omp critical(nf_watershed_flag)
    {
      flagged = flagged || sc.flagged;
      fk = std::max(fk, sc.flag_key);
    }
  }
  *flag_key = fk;
  return flagged;
}

// scikit-image's global heap (an exact replica) from the markers until every key <= K has been popped;
// returns the queued items left (their ages in nxt[]), which the per-component floods continue from.
template <class L, class I, class XItem>
std::vector<I> replica_until(const State<L, I>& S, const std::vector<I>& markers, double K) {
  const int nn = S.P->nn;
  const int64_t* off = S.P->off;
  ExactHeap<XItem> eh;
  for (const I p : markers) eh.push(XItem::make(ordered_key(S.val[p]), 0, p));
  const uint64_t kK = ordered_key(K);
  uint64_t age = 1;
  while (eh.items > 0 && eh.data[0].key <= kK) {
    const XItem e = eh.pop();
    const I idx = static_cast<I>(e.index());
    const L lp = S.lab[idx];
    const double cur = S.val[idx];
    for (int k = 0; k < nn; ++k) {
      const I n = static_cast<I>(idx + off[k]);
      if (S.lab[n] != 0) continue;
      S.lab[n] = lp;
      S.par[n] = idx;
      if (S.val[n] < cur) S.val[n] = cur;
      ++age;
      eh.push(XItem::make(ordered_key(S.val[n]), age, n));
    }
  }
  std::vector<I> left(static_cast<size_t>(eh.items));
  for (int64_t i = 0; i < eh.items; ++i) {
    const I p = static_cast<I>(eh.data[i].index());
    left[i] = p;
    S.nxt[p] = static_cast<I>(eh.data[i].age());
  }
  return left;
}

// The run holding padded pixel p (in the mask).
template <class I>
I run_of(const Runs<I>& R, int64_t Wp, I p) {
  const int64_t r = p / Wp - 1;
  const auto b = R.pos.begin() + R.row_first[r], e = R.pos.begin() + R.row_first[r + 1];
  return static_cast<I>((std::upper_bound(b, e, p) - R.pos.begin()) - 1);
}

// The largest value shared by markers of different labels in one component (-inf if none).
template <class L, class I>
double max_relevant_tie(Runs<I>& R, const State<L, I>& S, const std::vector<I>& mk, const std::vector<I>& mk_run) {
  std::vector<std::tuple<I, double, L>> v(mk.size());
  for (size_t i = 0; i < mk.size(); ++i) v[i] = {R.find(mk_run[i]), S.val[mk[i]], S.lab[mk[i]]};
  std::sort(v.begin(), v.end());
  double k = -std::numeric_limits<double>::infinity();
  for (size_t i = 1; i < v.size(); ++i)
    if (std::get<0>(v[i]) == std::get<0>(v[i - 1]) && std::get<1>(v[i]) == std::get<1>(v[i - 1]) &&
        std::get<2>(v[i]) != std::get<2>(v[i - 1]))
      k = std::max(k, std::get<1>(v[i]));
  return k;
}

// The flood without watershed lines: exact per-component level queues, markers in any order; the tie
// check proves that the order of equal-valued markers did not matter, or the flood is redone with
// scikit-image's heap replayed up to the largest flagged key (at most a few times, then to the end:
// the replica alone is the reference algorithm).
template <class L, class I, class XItem>
void flood(const Padded& P, const double* image, const L* markers, const uint8_t* mask, int64_t H, int64_t W,
           L* lab) {
  Workspace& ws = workspace();
  State<L, I> S{&P,
                H,
                W,
                lab,
                ws.get<double>(0, P.Np),
                ws.get<I>(1, P.Np),
                ws.get<I>(2, P.Np),
                -std::numeric_limits<double>::infinity()};
  Runs<I> R;
  std::vector<I> mk, mk_run, starts;
  init_state(S, image, markers, mask, R, mk, mk_run);
  if (mk.empty()) return;
  R.join(H, P.Wp, P.nn == 8);
  double fk = -std::numeric_limits<double>::infinity();
  // Few marker pixels (peak markers): the largest value shared by markers of different labels in one
  // component bounds every key a contest can be flagged at. When the replica up to it is cheap (few
  // pixels of the components lie at or below it), replay first and flood once, instead of flooding,
  // flagging and flooding again (-EDT energies: 5-10 % of the pixels below, half of the images flag).
  int first_attempt = 0;
  if (static_cast<int64_t>(mk.size()) <= 4096 + H * W / 256) {
    const double kt = max_relevant_tie(R, S, mk, mk_run);
    if (kt > fk) {
      int64_t below = 0, total = 0;
      for (size_t i = 0; i < R.pos.size(); ++i) {
        const double* v = S.val + R.pos[i];
        for (int32_t t = 0; t < R.len[i]; ++t) below += v[t] <= kt;
        total += R.len[i];
      }
      if (below * 4 <= total) {
        first_attempt = 1;
        fk = kt;
      }
    }
  }
  if (first_attempt == 0 && !flood_components(S, group_components(S, R, mk, mk_run, starts), starts, &fk)) return;
  // Retry with the flagged key; if a larger one is flagged then, go straight to the largest key of any
  // equal-valued markers of different labels in one component (no contest can be flagged above it).
  for (int attempt = first_attempt;; ++attempt) {
    // (a flag after attempt 1 cannot happen; if it did, the replica runs to the end, exact by itself)
    S.K = attempt == 0   ? fk
          : attempt == 1 ? std::max(fk, max_relevant_tie(R, S, mk, mk_run))
                         : std::numeric_limits<double>::infinity();
    if (attempt != 1 || first_attempt != 1) {  // (a first replica starts from the fresh state)
      init_state(S, image, markers, mask, R, mk, mk_run);
      R.join(H, P.Wp, P.nn == 8);
    }
    std::vector<I> left = replica_until<L, I, XItem>(S, mk, S.K);
    if (left.empty()) return;
    std::sort(left.begin(), left.end(), [&S](I a, I b) {
      return S.val[a] < S.val[b] || (S.val[a] == S.val[b] && (S.nxt[a] < S.nxt[b] || (S.nxt[a] == S.nxt[b] && a < b)));
    });
    std::vector<I> left_run(left.size());
    for (size_t i = 0; i < left.size(); ++i) left_run[i] = run_of(R, P.Wp, left[i]);
    if (!flood_components(S, group_components(S, R, left, left_run, starts), starts, &fk)) return;
  }
}

// Watershed lines: a literal replica of skimage's loop (labels at pop time, line pixels leave the mask).
template <class L>
void flood_lines(const Padded& P, const uint64_t* key, uint8_t* msk, L* out) {
  const int nn = P.nn;
  const int64_t* off = P.off;
  ExactHeap<ExactItem> eh;
  for (int64_t p = 0; p < P.Np; ++p)
    if (out[p] != 0) eh.push(ExactItem::make(key[p], 0, p, static_cast<int64_t>(out[p])));
  uint64_t age = 1;
  while (eh.items > 0) {
    const ExactItem e = eh.pop();
    const int64_t idx = e.index();
    if (out[idx] != 0 && e.age() != 0) continue;  // non-marker already labelled
    bool line = !msk[idx];
    if (!line) {
      for (int k = 0; k < nn; ++k) {
        const int64_t nb = idx + off[k];
        if (msk[nb] && out[nb] != 0 && static_cast<int64_t>(out[nb]) != e.label) {
          msk[idx] = 0;
          line = true;
          break;
        }
      }
    }
    if (!line) out[idx] = static_cast<L>(e.label);
    for (int k = 0; k < nn; ++k) {
      const int64_t n = idx + off[k];
      if (!msk[n] || out[n] != 0) continue;
      ++age;
      eh.push(ExactItem::make(std::max(key[n], e.key), age, n, e.label));
    }
  }
}

}  // namespace
}  // namespace ws_detail

template <class L>
void watershed_cpu(const double* image, const L* markers, const uint8_t* mask, int64_t H, int64_t W,
                   int connectivity, bool watershed_line, L* out) {
  using namespace ws_detail;
  if (H <= 0 || W <= 0) return;
  const Padded P(H, W, connectivity);
  const int64_t Wp = P.Wp;
  std::unique_ptr<L[]> lab_owned;
  L* lab = nullptr;
  if (!watershed_line) {
    lab = workspace().get<L>(3, P.Np);
    if (P.Np < (int64_t(1) << 31)) {
      flood<L, int32_t, PackedExactItem>(P, image, markers, mask, H, W, lab);
    } else {
      flood<L, int64_t, ExactItem>(P, image, markers, mask, H, W, lab);
    }
  } else {
    lab_owned.reset(new L[P.Np]);
    lab = lab_owned.get();
    std::unique_ptr<uint64_t[]> key(new uint64_t[P.Np]);
    std::unique_ptr<uint8_t[]> msk(new uint8_t[P.Np]);
    for (int64_t c = 0; c < Wp; ++c) {
      lab[c] = lab[P.Np - Wp + c] = L(0);
      key[c] = key[P.Np - Wp + c] = 0;
      msk[c] = msk[P.Np - Wp + c] = 0;
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < H; ++r) {
      const int64_t pr = (r + 1) * Wp;
      lab[pr] = lab[pr + W + 1] = L(0);
      key[pr] = key[pr + W + 1] = 0;
      msk[pr] = msk[pr + W + 1] = 0;
      const double* ir = image + r * W;
      const L* mr = markers + r * W;
      const uint8_t* kr = mask ? mask + r * W : nullptr;
      for (int64_t c = 0; c < W; ++c) {
        const int64_t p = pr + c + 1;
        const bool in = !kr || kr[c];
        key[p] = ordered_key(ir[c]);
        msk[p] = in;
        lab[p] = in && mr[c] > 0 ? mr[c] : L(0);
      }
    }
    flood_lines<L>(P, key.get(), msk.get(), lab);
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < H; ++r) {
    const L* lr = lab + (r + 1) * Wp + 1;
    L* orow = out + r * W;
    for (int64_t c = 0; c < W; ++c) orow[c] = lr[c] > 0 ? lr[c] : L(0);
  }
  workspace().trim();
}

template void watershed_cpu<int32_t>(const double*, const int32_t*, const uint8_t*, int64_t, int64_t, int, bool,
                                     int32_t*);
template void watershed_cpu<int64_t>(const double*, const int64_t*, const uint8_t*, int64_t, int64_t, int, bool,
                                     int64_t*);

int64_t watershed_emulated(const double* image, const int64_t* markers, const uint8_t* mask, int64_t H,
                           int64_t W, int connectivity, int64_t* out) {
  CpuExec ex;
  return ws::watershed_device(ex, ws::Args{image, markers, mask, H, W, connectivity >= 2 ? 8 : 4}, out);
}

}  // namespace nf
