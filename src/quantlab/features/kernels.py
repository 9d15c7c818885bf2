"""Compiled (numba) kernels of the recursive and windowed indicators, with carried state.

Every kernel walks rows in arrival order; `codes[i]` is row i's symbol and indexes the state
arrays, so one pass serves many symbols without sorting, and computing a history batch by batch
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

Outputs are NaN during warm-up.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NAN = np.nan


@njit(cache=True)
def sma_kernel(codes, x, n, ring, pos, count, total):  # type: ignore[no-untyped-def]
    out = np.empty(len(x))
    for i in range(len(x)):
        c = codes[i]
        v = x[i]
        if count[c] < n:
            total[c] += v
            ring[c, count[c]] = v
            count[c] += 1
        else:
            old = ring[c, pos[c]]
            ring[c, pos[c]] = v
            pos[c] = (pos[c] + 1) % n
            total[c] += v - old
        out[i] = total[c] / n if count[c] >= n else NAN
    return out


@njit(cache=True)
def ema_kernel(codes, x, n, count, seed, value):  # type: ignore[no-untyped-def]
    k = 2.0 / (n + 1.0)
    out = np.empty(len(x))
    for i in range(len(x)):
        c = codes[i]
        v = x[i]
        if count[c] < n:
            seed[c] += v
            count[c] += 1
            if count[c] == n:
                value[c] = seed[c] / n
                out[i] = value[c]
            else:
                out[i] = NAN
        else:
            value[c] = (v - value[c]) * k + value[c]
            out[i] = value[c]
    return out


@njit(cache=True)
def rsi_kernel(codes, x, n, count, prev, gain, loss):  # type: ignore[no-untyped-def]
    out = np.empty(len(x))
    for i in range(len(x)):
        c = codes[i]
        v = x[i]
        if count[c] == 0:
            prev[c] = v
            count[c] = 1
            out[i] = NAN
            continue
        d = v - prev[c]
        prev[c] = v
        up = d if d > 0 else 0.0
        down = -d if d < 0 else 0.0
        if count[c] <= n:  # still summing the first n differences
            gain[c] += up
            loss[c] += down
            count[c] += 1
            if count[c] == n + 1:
                gain[c] /= n
                loss[c] /= n
            else:
                out[i] = NAN
                continue
        else:
            gain[c] = (gain[c] * (n - 1) + up) / n
            loss[c] = (loss[c] * (n - 1) + down) / n
        total = gain[c] + loss[c]
        out[i] = 100.0 * gain[c] / total if total != 0.0 else 0.0
    return out


@njit(cache=True)
def macd_kernel(  # type: ignore[no-untyped-def]
    codes, x, fast, slow, signal, count, slow_sum, fast_sum, ring, fast_ema, slow_ema,
    sig_count, sig_sum, sig_ema,
):  # fmt: skip
    kf = 2.0 / (fast + 1.0)
    ks = 2.0 / (slow + 1.0)
    kg = 2.0 / (signal + 1.0)
    line = np.empty(len(x))
    sig = np.empty(len(x))
    hist = np.empty(len(x))
    for i in range(len(x)):
        c = codes[i]
        v = x[i]
        line[i] = NAN
        sig[i] = NAN
        hist[i] = NAN
        if count[c] < slow:
            slow_sum[c] += v
            ring[c, count[c] % fast] = v  # the last `fast` values at the seeding point
            count[c] += 1
            if count[c] < slow:
                continue
            fsum = 0.0
            for j in range(fast):
                fsum += ring[c, j]
            fast_ema[c] = fsum / fast
            slow_ema[c] = slow_sum[c] / slow
        else:
            count[c] += 1
            fast_ema[c] = (v - fast_ema[c]) * kf + fast_ema[c]
            slow_ema[c] = (v - slow_ema[c]) * ks + slow_ema[c]
        m = fast_ema[c] - slow_ema[c]
        if sig_count[c] < signal:
            sig_sum[c] += m
            sig_count[c] += 1
            if sig_count[c] < signal:
                continue
            sig_ema[c] = sig_sum[c] / signal
        else:
            sig_ema[c] = (m - sig_ema[c]) * kg + sig_ema[c]
        line[i] = m
        sig[i] = sig_ema[c]
        hist[i] = m - sig_ema[c]
    return line, sig, hist


@njit(cache=True)
def bollinger_kernel(codes, x, n, k, ring, pos, count):  # type: ignore[no-untyped-def]
    mid = np.empty(len(x))
    upper = np.empty(len(x))
    lower = np.empty(len(x))
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
        s = 0.0
        for j in range(n):
            s += ring[c, j]
        mean = s / n
        ss = 0.0
        for j in range(n):
            d = ring[c, j] - mean
            ss += d * d
        sd = np.sqrt(ss / n)
        mid[i] = mean
        upper[i] = mean + k * sd
        lower[i] = mean - k * sd
    return mid, upper, lower


@njit(cache=True)
def atr_kernel(codes, high, low, close, n, count, prev_close, total, value):  # type: ignore[no-untyped-def]
    out = np.empty(len(close))
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
    return out
