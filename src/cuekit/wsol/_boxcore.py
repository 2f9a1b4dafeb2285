"""Compiled kernels behind the WSOL box and mask metrics (numba; pure Python when numba is absent).

The reference protocol (wsolevaluation) thresholds a uint8 score map at up to 1,000 values
and asks OpenCV's `findContours(RETR_TREE)` for every contour at each one. The same boxes
follow from connected components, computed here once per map while the threshold moves:

* `img > t` for every t in 0..255 (a uint8 map has at most 256 distinct binary images);
* outer contours = 8-connected foreground components; box (x0, y0, x1 + 1, y1 + 1);
* hole contours = 4-connected background components not connected to the image frame
  (OpenCV pads the image with zeros); box (x0 - 1, y0 - 1, x1 + 2, y1 + 2);
  both clipped to (W - 1, H - 1) exactly as the reference clips `boundingRect`;
* the single box of the largest `contourArea` (MaxBoxAcc v1) is always the outer contour of a
  top-level component (a hole's area never exceeds its parent's, and the parent comes first
  in OpenCV's output). Its area is Q4 + Q3 / 2 over the 2x2 windows of the component with its
  holes filled, and ties go to the component found last in raster order, as OpenCV lists them.

Foreground components only merge as the threshold falls: one union-find pass over the pixels in
falling value order. Background components only merge as it rises: one union-find pass in rising
order in which the padding ring is a single component from the start, so a hole is a component
that has not (yet) joined the ring. A pixel joins one component per group of mutually adjacent
neighbours (a 256-entry table of the 8-neighbourhood), so most pixels cost one root look-up.
The filled foreground of v1 is {level > t}, where level is the lowest t at which a pixel is
background connected to the frame (one flood from the border). All passes work on the image
padded by one pixel, so neighbours need no bounds checks.
"""
from __future__ import annotations

import warnings

import numpy as np

try:  # numba is an optional extra ("cuekit[all]"); without it the kernels run as plain Python.
    import numba

    _njit = numba.njit(cache=True, nogil=True)
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

    def _njit(fn):
        return fn


_warned = False


def warn_if_slow() -> None:
    """Warn once that the metrics run uncompiled (numba missing): correct but ~100x slower."""
    global _warned
    if not HAVE_NUMBA and not _warned:
        _warned = True
        warnings.warn("numba is not installed: WSOL box metrics run as plain Python (slow). "
                      "Install cuekit[all] for the compiled path.", RuntimeWarning, stacklevel=3)


@_njit
def _root(parent, q):
    """Root of q's set, halving the path on the way."""
    while parent[q] != q:
        parent[q] = parent[parent[q]]
        q = parent[q]
    return q


@_njit
def _union_boxes(parent, size, box, ra, rb):
    """Join two roots by size, the larger absorbing the smaller and its box; -> (new root, absorbed root)."""
    if size[ra] < size[rb]:
        ra, rb = rb, ra
    parent[rb] = ra
    size[ra] += size[rb]
    box[ra, 0] = min(box[ra, 0], box[rb, 0])
    box[ra, 1] = min(box[ra, 1], box[rb, 1])
    box[ra, 2] = max(box[ra, 2], box[rb, 2])
    box[ra, 3] = max(box[ra, 3], box[rb, 3])
    return ra, rb


@_njit
def _best_iou(bx0, by0, bx1, by1, gt):
    """Max IoU of one box against gt (K, 4): inclusive (+1) areas, 0 for a degenerate union."""
    best = 0.0
    for k in range(gt.shape[0]):
        min_x = max(bx0, gt[k, 0])
        min_y = max(by0, gt[k, 1])
        max_x = min(bx1, gt[k, 2])
        max_y = min(by1, gt[k, 3])
        inter = max(0.0, max_x - min_x + 1.0) * max(0.0, max_y - min_y + 1.0)
        area_a = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0)
        area_b = (gt[k, 2] - gt[k, 0] + 1.0) * (gt[k, 3] - gt[k, 1] + 1.0)
        den = area_a + area_b - inter
        iou = 0.0 if den <= 0.0 else inter / den
        if iou > best:
            best = iou
    return best


@_njit
def _pad(flat, h, w):
    """The image padded by one pixel on every side (width w + 2); the ring holds 0."""
    w2 = w + 2
    out = np.zeros((h + 2) * w2, flat.dtype)
    for y in range(h):
        for x in range(w):
            out[(y + 1) * w2 + x + 1] = flat[y * w + x]
    return out


def _neighbour_groups() -> tuple[np.ndarray, np.ndarray]:
    """For each 8-bit mask of present 8-neighbours (bit j: offset j of NW, N, NE, W, E, SW, S, SE),
    one representative per group of mutually 8-adjacent present neighbours (at most 4): such a
    group lies in one foreground component already, so a new pixel needs one union per group."""
    pos = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    reps = np.zeros((256, 4), np.int64)
    count = np.zeros(256, np.int64)
    for mask in range(256):
        present = [j for j in range(8) if mask >> j & 1]
        seen: set[int] = set()
        for j in present:
            if j in seen:
                continue
            reps[mask, count[mask]] = j
            count[mask] += 1
            stack = [j]
            seen.add(j)
            while stack:
                a = stack.pop()
                for b in present:
                    if b not in seen and max(abs(pos[a][0] - pos[b][0]), abs(pos[a][1] - pos[b][1])) == 1:
                        seen.add(b)
                        stack.append(b)
    return reps, count


_GROUP_REPS, _GROUP_COUNT = _neighbour_groups()


@_njit
def _padded_order(keys_pad, h, w, nlevels):
    """Interior pixels of a padded key image sorted by key (stable: raster order within a key):
    padded indices (h*w,), their padded (x, y) (h*w, 2) int16, and the start of each key's run."""
    w2 = w + 2
    start = np.zeros(nlevels + 1, np.int64)
    for y in range(1, h + 1):
        for x in range(1, w + 1):
            start[int(keys_pad[y * w2 + x]) + 1] += 1
    for v in range(nlevels):
        start[v + 1] += start[v]
    pos = start[:nlevels].copy()
    order = np.empty(h * w, np.int32)
    xy = np.empty((h * w, 2), np.int16)
    for y in range(1, h + 1):
        for x in range(1, w + 1):
            p = y * w2 + x
            v = keys_pad[p]
            k = pos[v]
            order[k] = p
            xy[k, 0] = x
            xy[k, 1] = y
            pos[v] = k + 1
    return order, xy, start


@_njit
def _falling_masks(keys_pad, h, w):
    """(n2,) uint8: for each interior pixel p of a padded key image, bit j set where 8-neighbour j
    (NW, N, NE, W, E, SW, S, SE) is already added when pixels are added by falling key, raster
    order within a key: a larger key, or an equal key earlier in raster order. The padding ring
    holds 0 and is never added; the masks of pixels with key 0 are not used."""
    w2 = w + 2
    out = np.zeros((h + 2) * w2, np.uint8)
    for y in range(1, h + 1):
        above = keys_pad[(y - 1) * w2:y * w2]
        row = keys_pad[y * w2:(y + 1) * w2]
        below = keys_pad[(y + 1) * w2:(y + 2) * w2]
        dst = out[y * w2:(y + 1) * w2]
        for x in range(1, w + 1):
            v = row[x]
            dst[x] = (np.uint8(above[x - 1] >= v) | (np.uint8(above[x] >= v) << np.uint8(1))
                      | (np.uint8(above[x + 1] >= v) << np.uint8(2)) | (np.uint8(row[x - 1] >= v) << np.uint8(3))
                      | (np.uint8(row[x + 1] > v) << np.uint8(4)) | (np.uint8(below[x - 1] > v) << np.uint8(5))
                      | (np.uint8(below[x] > v) << np.uint8(6)) | (np.uint8(below[x + 1] > v) << np.uint8(7)))
    return out


@_njit
def _join_groups(parent, size, box, p, m, offsets):
    """Root of the component that p joins: the union of its neighbour groups (mask m, not 0)."""
    r = _root(parent, parent[p + offsets[_GROUP_REPS[m, 0]]])
    for k in range(1, _GROUP_COUNT[m]):
        r2 = _root(parent, parent[p + offsets[_GROUP_REPS[m, k]]])
        if r2 != r:
            r, _ = _union_boxes(parent, size, box, r, r2)
    return r


@_njit
def _start_component(parent, size, box, p, x, y):
    """Make p (at padded x, y) a component of its own."""
    parent[p] = p
    size[p] = 1
    box[p, 0] = x
    box[p, 1] = y
    box[p, 2] = x
    box[p, 3] = y


@_njit
def _add_to_component(parent, size, box, r, p, x, y):
    """Attach p (at padded x, y) to the component of root r."""
    parent[p] = r
    size[r] += 1
    box[r, 0] = min(box[r, 0], x)
    box[r, 1] = min(box[r, 1], y)
    box[r, 2] = max(box[r, 2], x)
    box[r, 3] = max(box[r, 3], y)


@_njit
def _foreground_pass(order, xy, start, masks, h, w, gt, need, out):
    """out[t] = best IoU over the boxes of the 8-connected components of (img > t), t = 255..0;
    -1 where there is no foreground (the caller substitutes the reference's empty box).
    masks: `_falling_masks` of the padded image."""
    w2 = w + 2
    n2 = (h + 2) * w2
    offsets = np.array([-w2 - 1, -w2, -w2 + 1, -1, 1, w2 - 1, w2, w2 + 1], np.int64)
    parent = np.full(n2, -1, np.int32)  # -1: not foreground (the padding ring never is)
    size = np.empty(n2, np.int32)
    box = np.empty((n2, 4), np.int16)  # x0, y0, x1, y1 in padded coordinates, valid at roots
    dirty = np.zeros(n2, np.bool_)
    cache = np.empty(n2, np.float64)  # written when a root is dirty, before it is read
    live = np.empty(h * w, np.int32)
    n_live = 0
    changed = False
    best = -1.0
    for t in range(255, -1, -1):
        v = t + 1
        if v <= 255:
            for idx in range(start[v], start[v + 1]):
                p = np.int64(order[idx])
                m = masks[p]
                changed = True
                if m == 0:
                    _start_component(parent, size, box, p, xy[idx, 0], xy[idx, 1])
                    dirty[p] = True
                    live[n_live] = p
                    n_live += 1
                else:
                    r = _join_groups(parent, size, box, p, m, offsets)
                    _add_to_component(parent, size, box, r, p, xy[idx, 0], xy[idx, 1])
                    dirty[r] = True
        if not need[t]:
            continue
        if changed:
            changed = False
            best = -1.0
            k = 0
            for i in range(n_live):
                r = live[i]
                if parent[r] != r:
                    continue
                live[k] = r
                k += 1
                if dirty[r]:
                    dirty[r] = False
                    # padded coordinates: pixel x = px - 1; box (x0, y0, x1 + 1, y1 + 1) clipped
                    cache[r] = _best_iou(float(box[r, 0] - 1), float(box[r, 1] - 1), float(min(box[r, 2], w - 1)),
                                         float(min(box[r, 3], h - 1)), gt)
                if cache[r] > best:
                    best = cache[r]
            n_live = k
        out[t] = best


@_njit
def _frame_flood_levels(img_pad, h, w):
    """Per padded pixel, the lowest t at which it is background connected to the image frame
    (4-connectivity): the minimax of the values along a path from outside. (n2,) int32; the
    padding ring is 0."""
    w2 = w + 2
    n2 = (h + 2) * w2
    level = np.zeros(n2, np.int32)
    queued = np.zeros(n2, np.bool_)
    for x in range(w2):
        queued[x] = True
        queued[n2 - 1 - x] = True
    for y in range(h + 2):
        queued[y * w2] = True
        queued[y * w2 + w + 1] = True
    nxt = np.full(n2, -1, np.int32)
    head = np.full(256, -1, np.int64)
    tail = np.full(256, -1, np.int64)
    for y in range(1, h + 1):
        for x in range(1, w + 1):
            if y == 1 or x == 1 or y == h or x == w:
                p = y * w2 + x
                b = img_pad[p]
                queued[p] = True
                if tail[b] < 0:
                    head[b] = p
                else:
                    nxt[tail[b]] = p
                tail[b] = p
    cur = 0
    while cur < 256:
        p = head[cur]
        if p < 0:
            cur += 1
            continue
        head[cur] = nxt[p]
        if head[cur] < 0:
            tail[cur] = -1
        level[p] = cur
        for j in range(4):
            if j == 0:
                q = p - w2
            elif j == 1:
                q = p + w2
            elif j == 2:
                q = p - 1
            else:
                q = p + 1
            if queued[q]:
                continue
            queued[q] = True
            b = max(cur, np.int64(img_pad[q]))
            nxt[q] = -1
            if tail[b] < 0:
                head[b] = q
            else:
                nxt[tail[b]] = q
            tail[b] = q
    return level



@_njit
def _hole_pass(order, xy, start, h, w, gt, need, out):
    """out[t] = best IoU over the hole-contour boxes of (img > t), t = 0..255; -1 without holes.

    Holes are the 4-connected components of (img <= t) not connected to the frame. The padding
    ring is one component (root 0, a ring pixel) from the start; a component that joins it is
    never a hole again, so only the others are tracked.
    """
    w2 = w + 2
    n2 = (h + 2) * w2
    parent = np.full(n2, -1, np.int32)  # -1: not background yet
    for x in range(w2):
        parent[x] = 0
        parent[n2 - 1 - x] = 0
    for y in range(h + 2):
        parent[y * w2] = 0
        parent[y * w2 + w + 1] = 0
    size = np.empty(n2, np.int32)
    box = np.empty((n2, 4), np.int16)  # x0, y0, x1, y1 in padded coordinates, valid at roots
    dirty = np.zeros(n2, np.bool_)
    cache = np.empty(n2, np.float64)  # written when a root is dirty, before it is read
    live = np.empty(h * w, np.int32)
    n_live = 0
    for t in range(256):
        for idx in range(start[t], start[t + 1]):
            p = np.int64(order[idx])
            up = parent[p - w2]
            left = parent[p - 1]
            right = parent[p + 1]
            down = parent[p + w2]
            if max(up, left, right, down) == 0:
                parent[p] = 0  # every neighbour present is the frame's own pixel: joins the frame
                continue
            r = -1
            for j in range(4):
                rq = up if j == 0 else left if j == 1 else right if j == 2 else down
                if rq < 0 or rq == r:
                    continue
                rq = _root(parent, rq)
                if r < 0:
                    r = rq
                elif rq != r:
                    if r == 0:
                        parent[rq] = 0
                    elif rq == 0:
                        parent[r] = 0
                        r = 0
                    else:
                        r, _ = _union_boxes(parent, size, box, r, rq)
                        dirty[r] = True
            if r == 0:
                parent[p] = 0
            elif r < 0:
                _start_component(parent, size, box, p, xy[idx, 0], xy[idx, 1])
                dirty[p] = True
                live[n_live] = p
                n_live += 1
            else:
                _add_to_component(parent, size, box, r, p, xy[idx, 0], xy[idx, 1])
                dirty[r] = True
        if not need[t] or n_live == 0:
            continue
        best = -1.0
        k = 0
        for i in range(n_live):
            r = live[i]
            if parent[r] != r:
                continue  # merged into another hole or into the frame
            live[k] = r
            k += 1
            if dirty[r]:
                dirty[r] = False
                # padded coordinates: box (x0 - 1, y0 - 1, x1 + 2, y1 + 2) of the unpadded hole
                cache[r] = _best_iou(float(box[r, 0] - 2), float(box[r, 1] - 2),
                                     float(min(box[r, 2] + 1, w - 1)), float(min(box[r, 3] + 1, h - 1)), gt)
            if cache[r] > best:
                best = cache[r]
        n_live = k
        out[t] = best


@_njit
def _largest_contour_pass(level, h, w, gt, need, out):
    """out[t] = IoU of the box of the largest-area contour of (img > t) (MaxBoxAcc v1), -1 if none.

    Components of the frame-filled foreground {p: level > t} (top-level components with their
    holes filled); area in half units = sum over 2x2 windows of (count - 2 where count >= 3).
    """
    order, xy, start = _padded_order(level, h, w, 257)
    masks = _falling_masks(level, h, w)
    w2 = w + 2
    n2 = (h + 2) * w2
    offsets = np.array([-w2 - 1, -w2, -w2 + 1, -1, 1, w2 - 1, w2, w2 + 1], np.int64)
    corners = np.array([0, -1, -w2, -w2 - 1], np.int64)  # windows with p as a corner (by top-left)
    parent = np.full(n2, -1, np.int32)
    size = np.empty(n2, np.int32)
    box = np.empty((n2, 4), np.int16)  # x0, y0, x1, y1 in padded coordinates, valid at roots
    first = np.empty(n2, np.int32)
    area2 = np.zeros(n2, np.int64)
    cells = np.zeros(n2, np.uint8)  # filled-foreground corners of the window with top-left p
    live = np.empty(h * w, np.int32)
    n_live = 0
    changed = False
    best = -1.0
    for t in range(255, -1, -1):
        v = t + 1
        for idx in range(start[v], start[v + 1]):
            p = np.int64(order[idx])
            m = masks[p]
            changed = True
            if m == 0:
                _start_component(parent, size, box, p, xy[idx, 0], xy[idx, 1])
                first[p] = p
                area2[p] = 0
                live[n_live] = p
                n_live += 1
                r = p
            else:
                r = _root(parent, parent[p + offsets[_GROUP_REPS[m, 0]]])
                for k in range(1, _GROUP_COUNT[m]):
                    r2 = _root(parent, parent[p + offsets[_GROUP_REPS[m, k]]])
                    if r2 != r:
                        ra, rb = _union_boxes(parent, size, box, r, r2)
                        first[ra] = min(first[ra], first[rb])
                        area2[ra] += area2[rb]
                        r = ra
                _add_to_component(parent, size, box, r, p, xy[idx, 0], xy[idx, 1])
                first[r] = min(first[r], p)
            for j in range(4):
                c = p + corners[j]
                cells[c] += 1
                if cells[c] >= 3:
                    area2[r] += 1
        if not need[t]:
            continue
        if changed:
            changed = False
            pick = -1
            k = 0
            for i in range(n_live):
                r = live[i]
                if parent[r] != r:
                    continue
                live[k] = r
                k += 1
                if pick < 0 or area2[r] > area2[pick] or (area2[r] == area2[pick] and first[r] > first[pick]):
                    pick = r
            n_live = k
            best = -1.0
            if pick >= 0:
                best = _best_iou(float(box[pick, 0] - 1), float(box[pick, 1] - 1),
                                 float(min(box[pick, 2], w - 1)), float(min(box[pick, 3], h - 1)), gt)
        out[t] = best


@_njit
def _one_map(flat, h, w, g, taus, multi_contour, largest_contour, out_multi, out_largest):
    """Per-threshold best IoUs of one flattened uint8 map (see `box_ious_batch`)."""
    n_tau = taus.shape[0]
    mx = 0
    for j in range(flat.shape[0]):
        if flat[j] > mx:
            mx = flat[j]
    need = np.zeros(256, np.bool_)
    thr = np.empty(n_tau, np.int64)
    for k in range(n_tau):
        thr[k] = int(taus[k] * mx)
        need[thr[k]] = True
    empty = _best_iou(0.0, 0.0, 0.0, 0.0, g)
    img_pad = _pad(flat, h, w)
    if multi_contour:
        order, xy, start = _padded_order(img_pad, h, w, 256)
        lv_fg = np.full(256, -1.0)
        lv_hole = np.full(256, -1.0)
        _foreground_pass(order, xy, start, _falling_masks(img_pad, h, w), h, w, g, need, lv_fg)
        _hole_pass(order, xy, start, h, w, g, need, lv_hole)
        for k in range(n_tau):
            a = lv_fg[thr[k]]
            out_multi[k] = empty if a < 0 else max(a, lv_hole[thr[k]])
    if largest_contour:
        level = _frame_flood_levels(img_pad, h, w)
        lv_big = np.full(256, -1.0)
        _largest_contour_pass(level, h, w, g, need, lv_big)
        for k in range(n_tau):
            a = lv_big[thr[k]]
            out_largest[k] = empty if a < 0 else a


@_njit
def box_ious_batch(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest):
    """Per map and threshold, the best IoU of the predicted boxes with the map's GT boxes.

    imgs: (N, H, W) uint8 score maps; gt: (M, 4) float64 boxes (x0, y0, x1, y1), map i owns
    gt[gt_start[i]:gt_start[i+1]]; taus: (T,) float64 thresholds in [0, 1). Writes
    out_multi[i, k] (all contours, MaxBoxAccV2) and out_largest[i, k] (largest contour, MaxBoxAcc)
    for the flags that are set. The binary map at tau is img > int(tau * img.max()).
    """
    n_maps, h, w = imgs.shape
    for i in range(n_maps):
        _one_map(imgs[i].ravel(), h, w, gt[gt_start[i]:gt_start[i + 1]], taus, multi_contour,
                 largest_contour, out_multi[i], out_largest[i])


@_njit
def boxes_at_level(flat, h, w, t, multi_contour):
    """The protocol's boxes of (img > t) as (B, 4) int64 (x0, y0, x1, y1), clipped like the
    reference: every outer and hole contour (multi_contour) or the largest contour only."""
    n = h * w
    level_pad = _frame_flood_levels(_pad(flat, h, w), h, w)
    level = np.empty(n, np.int32)
    for y in range(h):
        for x in range(w):
            level[y * w + x] = level_pad[(y + 1) * (w + 2) + x + 1]
    label = np.full(n, -1, np.int64)
    stack = np.empty(n, np.int64)
    boxes = np.empty((n, 4), np.int64)
    nb = 0
    best_area = -1
    best_first = -1
    for kind in range(3):
        # 0: outer contours (8-connected img > t); 1: holes (4-connected img <= t < level);
        # 2: frame-filled foreground (level > t) for the largest contour
        if kind == 1 and not multi_contour:
            continue
        if (kind == 0 and not multi_contour) or (kind == 2 and multi_contour):
            continue
        label[:] = -1
        for s in range(n):
            if kind == 0:
                inside = flat[s] > t
            elif kind == 1:
                inside = flat[s] <= t and level[s] > t
            else:
                inside = level[s] > t
            if not inside or label[s] >= 0:
                continue
            label[s] = s
            top = 0
            stack[0] = s
            x0 = w
            y0 = h
            x1 = -1
            y1 = -1
            area2 = 0
            while top >= 0:
                p = stack[top]
                top -= 1
                py = p // w
                px = p - py * w
                x0 = min(x0, px)
                y0 = min(y0, py)
                x1 = max(x1, px)
                y1 = max(y1, py)
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        if (dy == 0 and dx == 0) or (kind == 1 and dy != 0 and dx != 0):
                            continue
                        qy = py + dy
                        qx = px + dx
                        if qy < 0 or qy >= h or qx < 0 or qx >= w:
                            continue
                        q = qy * w + qx
                        if label[q] >= 0:
                            continue
                        if kind == 0:
                            ok = flat[q] > t
                        elif kind == 1:
                            ok = flat[q] <= t and level[q] > t
                        else:
                            ok = level[q] > t
                        if ok:
                            label[q] = s
                            top += 1
                            stack[top] = q
            if kind == 2:
                for cy in range(max(y0 - 1, 0), min(y1 + 1, h - 1)):
                    for cx in range(max(x0 - 1, 0), min(x1 + 1, w - 1)):
                        c = cy * w + cx
                        k = (label[c] == s) + (label[c + 1] == s) + (label[c + w] == s) + (label[c + w + 1] == s)
                        if k >= 3:
                            area2 += k - 2
            if kind == 0:
                boxes[nb, 0] = x0
                boxes[nb, 1] = y0
                boxes[nb, 2] = min(x1 + 1, w - 1)
                boxes[nb, 3] = min(y1 + 1, h - 1)
                nb += 1
            elif kind == 1:
                boxes[nb, 0] = x0 - 1
                boxes[nb, 1] = y0 - 1
                boxes[nb, 2] = min(x1 + 2, w - 1)
                boxes[nb, 3] = min(y1 + 2, h - 1)
                nb += 1
            elif area2 > best_area or (area2 == best_area and s > best_first):
                best_area = area2
                best_first = s
                boxes[0, 0] = x0
                boxes[0, 1] = y0
                boxes[0, 2] = min(x1 + 1, w - 1)
                boxes[0, 3] = min(y1 + 1, h - 1)
                nb = 1
    return boxes[:nb].copy()


@_njit
def to_uint8(values, out):
    """out = uint8(values * 255) (truncation, in the values' own precision); False if any value
    is NaN or outside [0, 1] (then out is incomplete)."""
    scale = values.dtype.type(255)
    for i in range(values.shape[0]):
        v = values[i]
        if not (v >= 0 and v <= 1):
            return False
        out[i] = np.uint8(v * scale)
    return True


@_njit
def score_histograms(scores, masks, edges, inv_step, hist_true, hist_false):
    """Add per-bin counts of scores at mask == 1 (hist_true) and mask == 0 (hist_false).

    scores: (N, P) float in [0, 1]; masks: (N, P) uint8 (other values are ignored);
    edges: ascending bin edges; bin b holds edges[b] <= s < edges[b+1] (np.histogram's rule,
    the last bin closed). inv_step only guesses the bin; the edges decide it exactly.
    Returns False (counts incomplete) if a score is NaN or outside [0, 1].
    """
    nb = edges.shape[0] - 1
    route = np.full(256, 2, np.int64)  # mask value -> row of counts: 0 background, 1 object, 2 ignored
    route[0] = 0
    route[1] = 1
    counts = np.zeros((3, nb), np.int64)
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            s = np.float64(scores[i, j])
            if not (s >= 0.0 and s <= 1.0):
                return False
            b = min(int(s * inv_step), nb - 1)
            if edges[b + 1] <= s:
                b += 1
                while b < nb - 1 and edges[b + 1] <= s:
                    b += 1
            elif edges[b] > s:
                b -= 1
                while b > 0 and edges[b] > s:
                    b -= 1
            counts[route[masks[i, j]], b] += 1
    for b in range(nb):
        hist_false[b] += counts[0, b]
        hist_true[b] += counts[1, b]
    return True


if HAVE_NUMBA:

    @numba.njit(cache=True, nogil=True, parallel=True)
    def box_ious_batch_parallel(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest):
        """`box_ious_batch` with the maps spread over numba's threads (results are identical)."""
        n_maps, h, w = imgs.shape
        for i in numba.prange(n_maps):
            _one_map(imgs[i].ravel(), h, w, gt[gt_start[i]:gt_start[i + 1]], taus, multi_contour,
                     largest_contour, out_multi[i], out_largest[i])
else:  # pragma: no cover
    box_ious_batch_parallel = box_ious_batch


def run_box_ious(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest,
                 num_threads: int | None = None) -> None:
    """Dispatch to the serial or threaded kernel; num_threads None = as many as torch may use
    (torch.get_num_threads()), 1 = serial. Numba's OpenMP layer can share torch's thread pool, so
    torch's thread count is restored afterwards."""
    if (num_threads is not None and num_threads <= 1) or imgs.shape[0] < 2 or not HAVE_NUMBA:
        box_ious_batch(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest)
        return
    import torch

    torch_threads = torch.get_num_threads()
    threads = torch_threads if num_threads is None else num_threads
    if threads <= 1:
        box_ious_batch(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest)
        return
    try:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            box_ious_batch_parallel(imgs, gt, gt_start, taus, multi_contour, largest_contour, out_multi, out_largest)
        finally:
            numba.set_num_threads(previous)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
