"""Compiled (numba) kernels of the recursive and windowed indicators, with carried state.

Every kernel walks rows in arrival order; `codes[i]` is row i's symbol and indexes the state
arrays, so one pass serves many symbols without sorting (a run of rows of one symbol keeps the
state in local variables: research frames grouped by symbol run at full speed, interleaved live
batches still work), and computing a history batch by batch
(state carried between calls) runs exactly the same arithmetic as computing it at once: the
streaming result equals the batch result bit for bit, whatever the batch boundaries.

Conventions follow TA-Lib (each is checked against TA-Lib in the tests):

* SMA(n): first value at the n-th observation, a running sum.
* EMA(n): k = 2/(n+1), seeded at the n-th observation with the SMA of the first n values.
* RSI(n), Wilder: first value at the (n+1)-th observation (n differences); average gain and
  loss start as simple means of the first n, then ``(prev*(n-1) + x)/n``; RSI = 100·g/(g+l)
  (0 when both are 0).
* MACD(fast, slow, signal): both EMAs start at the slow-th observation, the fast one seeded
  with the SMA of the last `fast` of those values; the signal is an EMA of MACD seeded with the
  SMA of its first `signal` values; all three outputs start together at observation
  slow + signal - 1.
* Bollinger(n, k): SMA ± k population standard deviations of the last n values.
* ATR(n): true range from the 2nd observation on; first value at the (n+1)-th observation as
  the mean of the first n true ranges, then Wilder's smoothing.

Outputs are NaN during warm-up. Kernels write into output arrays the caller allocates (so
two threads can fill disjoint slices) and release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NAN = np.nan


@njit(cache=True, nogil=True)
def _run_end(codes, i):  # type: ignore[no-untyped-def]
    """The end of the run of rows with the same symbol starting at row i."""
    c = codes[i]
    j = i + 1
    while j < len(codes) and codes[j] == c:
        j += 1
    return j


@njit(cache=True, nogil=True)
def _ring_stats(ring, c, n, ddof):  # type: ignore[no-untyped-def]
    """Mean and standard deviation (two-pass; `ddof` 0 population, 1 sample) of ring row c."""
    s = 0.0
    for j in range(n):
        s += ring[c, j]
    mean = s / n
    ss = 0.0
    for j in range(n):
        d = ring[c, j] - mean
        ss += d * d
    return mean, (np.sqrt(ss / (n - ddof)) if n > ddof else NAN)


@njit(cache=True, nogil=True)
def sma_kernel(codes, x, n, ring, pos, count, total, out):  # type: ignore[no-untyped-def]
    i = 0
    while i < len(x):
        c = codes[i]
        end = _run_end(codes, i)
        p, cnt, tot = pos[c], count[c], total[c]
        for t in range(i, end):
            v = x[t]
            if cnt < n:
                tot += v
                ring[c, cnt] = v
                cnt += 1
            else:
                tot += v - ring[c, p]
                ring[c, p] = v
                p = p + 1 if p + 1 < n else 0
            out[t] = tot / n if cnt >= n else NAN
        pos[c], count[c], total[c] = p, cnt, tot
        i = end


@njit(cache=True, nogil=True)
def ema_kernel(codes, x, n, count, seed, value, out):  # type: ignore[no-untyped-def]
    k = 2.0 / (n + 1.0)
    i = 0
    while i < len(x):
        c = codes[i]
        end = _run_end(codes, i)
        cnt, sd, val = count[c], seed[c], value[c]
        for t in range(i, end):
            v = x[t]
            if cnt < n:
                sd += v
                cnt += 1
                if cnt == n:
                    val = sd / n
                    out[t] = val
                else:
                    out[t] = NAN
            else:
                val = (v - val) * k + val
                out[t] = val
        count[c], seed[c], value[c] = cnt, sd, val
        i = end


@njit(cache=True, nogil=True)
def rsi_kernel(codes, x, n, count, prev, gain, loss, out):  # type: ignore[no-untyped-def]
    i = 0
    while i < len(x):
        c = codes[i]
        end = _run_end(codes, i)
        cnt, pv, g, lo = count[c], prev[c], gain[c], loss[c]
        for t in range(i, end):
            v = x[t]
            if cnt == 0:
                pv = v
                cnt = 1
                out[t] = NAN
                continue
            d = v - pv
            pv = v
            up = d if d > 0 else 0.0
            down = -d if d < 0 else 0.0
            if cnt <= n:  # still summing the first n differences
                g += up
                lo += down
                cnt += 1
                if cnt == n + 1:
                    g /= n
                    lo /= n
                else:
                    out[t] = NAN
                    continue
            else:
                g = (g * (n - 1) + up) / n
                lo = (lo * (n - 1) + down) / n
            total = g + lo
            out[t] = 100.0 * g / total if total != 0.0 else 0.0
        count[c], prev[c], gain[c], loss[c] = cnt, pv, g, lo
        i = end


@njit(cache=True, nogil=True)
def macd_kernel(  # type: ignore[no-untyped-def]
    codes, x, fast, slow, signal, count, slow_sum, fast_sum, ring, fast_ema, slow_ema,
    sig_count, sig_sum, sig_ema, line, sig, hist,
):  # fmt: skip
    kf = 2.0 / (fast + 1.0)
    ks = 2.0 / (slow + 1.0)
    kg = 2.0 / (signal + 1.0)
    i = 0
    while i < len(x):
        c = codes[i]
        end = _run_end(codes, i)
        cnt, ssum, fe, se = count[c], slow_sum[c], fast_ema[c], slow_ema[c]
        gcnt, gsum, ge = sig_count[c], sig_sum[c], sig_ema[c]
        for t in range(i, end):
            v = x[t]
            line[t] = NAN
            sig[t] = NAN
            hist[t] = NAN
            if cnt < slow:
                ssum += v
                ring[c, cnt % fast] = v  # the last `fast` values at the seeding point
                cnt += 1
                if cnt < slow:
                    continue
                fsum = 0.0
                for j in range(fast):
                    fsum += ring[c, j]
                fe = fsum / fast
                se = ssum / slow
            else:
                cnt += 1
                fe = (v - fe) * kf + fe
                se = (v - se) * ks + se
            m = fe - se
            if gcnt < signal:
                gsum += m
                gcnt += 1
                if gcnt < signal:
                    continue
                ge = gsum / signal
            else:
                ge = (m - ge) * kg + ge
            line[t] = m
            sig[t] = ge
            hist[t] = m - ge
        count[c], slow_sum[c], fast_ema[c], slow_ema[c] = cnt, ssum, fe, se
        sig_count[c], sig_sum[c], sig_ema[c] = gcnt, gsum, ge
        i = end


@njit(cache=True, nogil=True)
def bollinger_kernel(codes, x, n, k, ring, pos, count, mid, upper, lower):  # type: ignore[no-untyped-def]
    for i in range(len(x)):
        c = codes[i]
        if count[c] < n:
            ring[c, count[c]] = x[i]
            count[c] += 1
        else:
            ring[c, pos[c]] = x[i]
            pos[c] = (pos[c] + 1) % n
        if count[c] < n:
            mid[i] = NAN
            upper[i] = NAN
            lower[i] = NAN
            continue
        mean, sd = _ring_stats(ring, c, n, 0)
        mid[i] = mean
        upper[i] = mean + k * sd
        lower[i] = mean - k * sd


@njit(cache=True, nogil=True)
def atr_kernel(codes, high, low, close, n, count, prev_close, total, value, out):  # type: ignore[no-untyped-def]
    for i in range(len(close)):
        c = codes[i]
        if count[c] == 0:
            prev_close[c] = close[i]
            count[c] = 1
            out[i] = NAN
            continue
        pc = prev_close[c]
        tr = max(high[i] - low[i], abs(high[i] - pc), abs(low[i] - pc))
        prev_close[c] = close[i]
        if count[c] <= n:
            total[c] += tr
            count[c] += 1
            if count[c] == n + 1:
                value[c] = total[c] / n
                out[i] = value[c]
            else:
                out[i] = NAN
        else:
            value[c] = (value[c] * (n - 1) + tr) / n
            out[i] = value[c]


@njit(cache=True, nogil=True)
def returns_kernel(codes, x, log, count, prev, out):  # type: ignore[no-untyped-def]
    """x_t / x_{t-1} - 1 (or its log); NaN for a symbol's first value."""
    for i in range(len(x)):
        c = codes[i]
        if count[c] == 0:
            out[i] = NAN
            count[c] = 1
        else:
            out[i] = np.log(x[i] / prev[c]) if log else x[i] / prev[c] - 1.0
        prev[c] = x[i]


@njit(cache=True, nogil=True)
def rolling_kernel(codes, x, n, skip_first, ring, pos, count, seen, mean_out, std_out):  # type: ignore[no-untyped-def]
    """Mean and sample standard deviation of the last `n` values of each symbol (NaN until n
    values were seen). With `skip_first`, each symbol's first value is ignored (a NaN return)."""
    for i in range(len(x)):
        c = codes[i]
        seen[c] += 1
        if skip_first and seen[c] == 1:
            mean_out[i] = NAN
            std_out[i] = NAN
            continue
        if count[c] < n:
            ring[c, count[c]] = x[i]
            count[c] += 1
        else:
            ring[c, pos[c]] = x[i]
            pos[c] = (pos[c] + 1) % n
        if count[c] < n:
            mean_out[i] = NAN
            std_out[i] = NAN
            continue
        mean, sd = _ring_stats(ring, c, n, 1)
        mean_out[i] = mean
        std_out[i] = sd


@njit(cache=True, nogil=True)
def vwap_kernel(codes, price, volume, n, ring_pv, ring_v, pos, count, out):  # type: ignore[no-untyped-def]
    """Sum(price·volume)/sum(volume) over the last `n` rows of each symbol."""
    for i in range(len(price)):
        c = codes[i]
        if count[c] < n:
            ring_pv[c, count[c]] = price[i] * volume[i]
            ring_v[c, count[c]] = volume[i]
            count[c] += 1
        else:
            ring_pv[c, pos[c]] = price[i] * volume[i]
            ring_v[c, pos[c]] = volume[i]
            pos[c] = (pos[c] + 1) % n
        if count[c] < n:
            out[i] = NAN
            continue
        spv = 0.0
        sv = 0.0
        for j in range(n):
            spv += ring_pv[c, j]
            sv += ring_v[c, j]
        out[i] = spv / sv if sv != 0.0 else NAN


@njit(cache=True, nogil=True)
def ofi_kernel(codes, bid, ask, bid_size, ask_size, count, prev, out):  # type: ignore[no-untyped-def]
    """Order-flow imbalance of each quote against the symbol's previous quote (Cont et al.).

    `prev[c]` holds the previous bid, ask, bid size and ask size."""
    for i in range(len(bid)):
        c = codes[i]
        if count[c] == 0:
            out[i] = NAN
            count[c] = 1
        else:
            pb, pa, pbs, pas = prev[c, 0], prev[c, 1], prev[c, 2], prev[c, 3]
            if bid[i] > pb:
                bf = bid_size[i]
            elif bid[i] == pb:
                bf = bid_size[i] - pbs
            else:
                bf = -pbs
            if ask[i] < pa:
                af = ask_size[i]
            elif ask[i] == pa:
                af = ask_size[i] - pas
            else:
                af = -pas
            out[i] = bf - af
        prev[c, 0] = bid[i]
        prev[c, 1] = ask[i]
        prev[c, 2] = bid_size[i]
        prev[c, 3] = ask_size[i]
