"""How element tables name their columns (bAxil/WinAxil batch exports, ITRAX Q-Spec result.txt, CoreMAX's own
layout): a column name -> its role, an Avaatech spectrum name -> the spot's settings and back (bAxil's Spectrum
field), the scanner label. The reader and writer are coremax.data.element_tables; docs/element-tables.md lists the
layouts with example header lines.

Names are compared after `norm`: lower case, spaces, `-`, `_`, brackets and quotes collapsed to one space, so
`" Ca-Ka Area"`, `Ca_Area`, `ca ka area` and `CA-KA-AREA` are one name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from coremax.errors import UserError

SYMBOLS = ("H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb "
           "Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf "
           "Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U").split()
Z = {s: i + 1 for i, s in enumerate(SYMBOLS)}
_SYMBOL = {s.lower(): s for s in SYMBOLS}

# What a suffixed element column holds (normalised suffix -> part): the net peak area (counts), its 1-sigma error,
# the fit's chi-square over that line, the area per live second and its error.
WHAT = {"area": "area", "net area": "area", "areastd": "sd", "area std": "sd", "darea": "sd", "error": "sd",
        "err": "sd", "sd": "sd", "std": "sd", "sigma": "sd", "chi2": "chi2", "chisqr": "chi2", "chi sqr": "chi2",
        "chisq": "chi2", "cps": "cps", "cpsstd": "cps_sd", "cps std": "cps_sd"}
SCATTER = {"coh": "coh", "rayleigh": "coh", "inc": "scatter", "compton": "scatter", "scatter": "scatter"}
_WHAT = "|".join(sorted(map(re.escape, WHAT), key=len, reverse=True))
_SC = "|".join(SCATTER)
ELEMENT = re.compile(rf"(?P<el>[a-z]{{1,2}})(?: (?P<line>[klm][a-z]?\d?))?(?: (?P<sc>{_SC}))?(?: (?P<what>{_WHAT}))?")
BARE_SCATTER = re.compile(rf"(?P<sc>{_SC})(?: (?P<what>{_WHAT}))?")

# Metadata columns (normalised name -> (field, factor to CoreMAX's unit, rank)); of several columns of a field the
# one of the lowest rank (earliest in its list below) wins, e.g. throughput_cps over total_cps.
META = {}
for _field, _names in {
        ("core", None): ("core", "core id", "coreid", "core name", "corename"),
        ("sample", None): ("sample", "sample id", "sampleid", "sample name"),
        ("name", None): ("spectrum", "filename", "file name", "file", "spectrum file"),
        ("section", None): ("section", "section id"),
        ("filter", None): ("filter",), ("scanner", None): ("scanner",),
        ("date", None): ("date", "measurement date", "measurementdate"),
        ("depth_mm", 1.0): ("depth mm", "depth", "composite depth mm"), ("depth_mm", 10.0): ("depth cm",),
        ("position_mm", 1.0): ("position mm", "position", "pos mm"), ("position_mm", 10.0): ("position cm",),
        ("section_start_mm", 1.0): ("section start mm", "section start"),
        ("section_start_mm", 10.0): ("section start cm",),
        ("kv", 1.0): ("kv", "voltage", "voltage kv", "tube voltage", "tube kv"),
        ("live_time_s", 1.0): ("live time s", "live time", "livetime", "live"),
        ("real_time_s", 1.0): ("real time s", "real time", "realtime"),
        ("current_ma", 1.0): ("current ma", "current", "tube current"), ("current_ma", 0.001): ("current ua",),
        ("slit_dc_mm", 1.0): ("slit dc mm", "slit dc"), ("slit_cc_mm", 1.0): ("slit cc mm", "slit cc"),
        ("chi2", 1.0): ("chi2", "chisqr", "chi sqr", "chisq", "reduced chi2", "mse"),
        ("throughput_cps", 1.0): ("throughput cps", "throughput", "cps", "total cps", "totalcps"),
        ("throughput_cps", 1000.0): ("kcps",), ("validity", 1.0): ("validity",)}.items():
    META.update({n: (*_field, rank) for rank, n in enumerate(_names)})
TEXT_FIELDS = ("core", "sample", "name", "section", "filter", "scanner", "date")


def norm(name) -> str:
    return re.sub(r"[\s_\-()\[\]\"']+", " ", str(name)).strip().lower()


def line_rank(line: str | None) -> int:
    """Which line of an element counts when a table lists several: no line or K-alpha, then other K, L-alpha,
    other L, M lines."""
    if not line or line in ("k", "ka", "ka1"):
        return 0
    return {"k": 1, "l": 2 if line in ("l", "la", "la1") else 3}.get(line[0], 4)


def classify(name, plain: bool = False):
    """(key, part, line, rank) of an element or scatter column, else None. key: the element symbol (`Ca`) or
    `coh` / `scatter`; part: area, sd, chi2, cps or cps_sd. `plain`: a column named by the symbol alone (`Ca`,
    as in ITRAX result.txt) is that element's area."""
    raw = str(name).strip().strip('"').strip()
    if plain and raw in Z:
        return raw, "area", None, 0
    n = norm(raw)
    m = BARE_SCATTER.fullmatch(n)
    if m:
        return SCATTER[m["sc"]], WHAT[m["what"]] if m["what"] else "area", None, 0
    m = ELEMENT.fullmatch(n)
    if not m or m["el"] not in _SYMBOL or (not m["what"] and not m["sc"]):
        return None
    if m["sc"]:  # a tube line's scatter: `Rh-La-Coh Area`, `Rh Coh`, `Mo inc`
        return SCATTER[m["sc"]], WHAT[m["what"]] if m["what"] else "area", m["line"], line_rank(m["line"])
    return _SYMBOL[m["el"]], WHAT[m["what"]], m["line"], line_rank(m["line"])


def _num(text) -> float:
    try:
        return float(str(text).strip().replace(",", "."))
    except ValueError:
        return float("nan")


# <core>[_<section>] <pos>mm  <live>s  <kV>kV <current>uA <filter>[...].spe|.wax, as Avaatech names spectra.
AVAATECH = re.compile(r"(?P<core>.+?)(?:_(?P<section>\d{3,6}))?\s+(?P<pos>\d+(?:[.,]\d+)?)mm\s+"
                      r"(?P<live>\d+(?:[.,]\d+)?)s\s+(?P<kv>\d+(?:[.,]\d+)?)kV\s+(?P<ua>\d+(?:[.,]\d+)?)uA"
                      r"\s*(?P<filter>\S*)", re.IGNORECASE)


def parse_name(text) -> dict:
    """What a spectrum's name says: bAxil's Spectrum field (17 fields split by `!`: core, -, -, position,
    date, time, live time, kV, current (uA), -, -, filter, slit down-core, slit cross-core, run, replicate,
    setting) or an Avaatech file name (WinAxil's FileName, a path allowed). {} when it is neither."""
    text = str(text).strip()
    f = text.split("!")
    if len(f) >= 14:
        return {"core": f[0].strip(), "position_mm": _num(f[3]), "date": f"{f[4].strip()} {f[5].strip()}".strip(),
                "live_time_s": _num(f[6]), "kv": _num(f[7]), "current_ma": _num(f[8]) / 1000,
                "filter": f[11].strip(), "slit_dc_mm": _num(f[12]), "slit_cc_mm": _num(f[13])}
    m = AVAATECH.match(re.split(r"[\\/]", text)[-1])
    if not m:
        return {}
    out = {"core": m["core"].strip(), "position_mm": _num(m["pos"]), "live_time_s": _num(m["live"]),
           "kv": _num(m["kv"]), "current_ma": _num(m["ua"]) / 1000,
           "filter": re.sub(r"\.(spe|wax|txt)$", "", m["filter"], flags=re.IGNORECASE) or "No-Filter"}
    if m["section"]:  # 3-4 digits: cm, 5-6: mm (as in coremax.data.raw)
        start = int(m["section"]) * (10 if len(m["section"]) <= 4 else 1)
        out.update(section=m["section"], section_start_mm=float(start), depth_mm=start + out["position_mm"])
    return out


def baxil_line(symbol: str) -> str:
    """The line the writer names an element by: K-alpha up to Cs, L-alpha from Ba on."""
    return "Ka" if Z.get(symbol, 99) <= 55 else "La"


def element_groups(columns, plain: bool) -> dict:
    """{key: {part: column}} of each element and scatter key, one line per key (see line_rank)."""
    found = {}
    for i, c in enumerate(columns):
        role = classify(c, plain)
        if role:
            found.setdefault(role[0], []).append((role[3], i, role[2], role[1], c))
    groups = {}
    for key, entries in found.items():
        main = [e for e in entries if e[3] in ("area", "cps")]
        if main:
            line = min(main)[2]
            groups[key] = {part: c for _, _, ln, part, c in sorted(entries, reverse=True) if ln == line}
    return groups


def scanner_labels(meta: pd.DataFrame, head: str) -> pd.Series:
    """The scanner setting as coremax.data.raw.scanner_label writes it, unknown parts left out."""
    def label(r):
        parts = [head, f"{r['current_ma']:g} mA" if np.isfinite(r["current_ma"]) else "",
                 f"{r['live_time_s']:g} s" if np.isfinite(r["live_time_s"]) else "", r["filter"],
                 f"slit {r['slit_cc_mm']:g}" if np.isfinite(r["slit_cc_mm"]) else ""]
        return " | ".join(p for p in parts if p)
    return meta.apply(label, axis=1) if len(meta) else pd.Series([], dtype=str)


def _g(v) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else repr(float(v)) \
        if isinstance(v, (int, float, np.number)) else str(v)


def spectrum_field(r) -> str:
    """bAxil's 17-field Spectrum name (see element_columns.parse_name) of one metadata row."""
    if "!" in str(r.get("core", "")):
        raise UserError(f"The core name {r['core']!r} holds a '!', which bAxil's Spectrum field uses as separator; "
                        "rename the core or write layout='coremax'.")
    date, _, time = str(r.get("date", "") or "").partition(" ")
    ua = r.get("current_ma", np.nan) * 1000
    source = Path(str(r.get("source_file", "") or "coremax")).name.replace("!", "_")
    return "!".join([str(r["core"]), "0", "0", _g(r.get("position_mm", r["depth_mm"])), date, time,
                     _g(r.get("live_time_s")), _g(r.get("kv")), _g(round(ua, 6) if np.isfinite(ua) else np.nan),
                     _g(r["depth_mm"]), "0.0", str(r.get("filter", "") or ""), _g(r.get("slit_dc_mm")),
                     _g(r.get("slit_cc_mm")), "Run1", "Rep0", source])
