"""Regenerate plugins/ewssync/data/windows_zones.json from exchangelib's CLDR tables.

Run: .venv/bin/python -m tools.gen_windows_zones   (the package itself never imports exchangelib
outside hook.py/exchange.py, so the table is shipped as data).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "plugins" / "ewssync" / "data" / "windows_zones.json"

# Names real servers send that CLDR does not list (read: exchangelib issues #541, #310, #1197),
# mapped by hand. "Customized Time Zone" and anything unknown stay unmapped on purpose.
EXTRA_WINDOWS_NAMES = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "(UTC) Coordinated Universal Time": "UTC",
    "GMT": "Etc/GMT",
    "Greenwich Mean Time": "Europe/London",
    "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna": "Europe/Berlin",
    "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris": "Europe/Paris",
    "(UTC+01:00) Belgrade, Bratislava, Budapest, Ljubljana, Prague": "Europe/Budapest",
    "(UTC+00:00) Dublin, Edinburgh, Lisbon, London": "Europe/London",
    "(UTC-05:00) Eastern Time (US & Canada)": "America/New_York",
    "(UTC-06:00) Central Time (US & Canada)": "America/Chicago",
    "(UTC-07:00) Mountain Time (US & Canada)": "America/Denver",
    "(UTC-08:00) Pacific Time (US & Canada)": "America/Los_Angeles",
    "(UTC+09:00) Osaka, Sapporo, Tokyo": "Asia/Tokyo",
    "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi": "Asia/Kolkata",
    "Mitteleuropäische Zeit": "Europe/Berlin",
    "Westeuropäische Normalzeit": "Europe/Berlin",
}


def build() -> dict:
    from exchangelib import winzone

    windows_to_iana = dict(winzone.MS_TIMEZONE_TO_IANA_MAP)
    for name, zone in EXTRA_WINDOWS_NAMES.items():
        windows_to_iana.setdefault(name, zone)
    return {
        "source": f"exchangelib.winzone, CLDR windowsZones {winzone.CLDR_WINZONE_TYPE_VERSION}",
        "windows_to_iana": dict(sorted(windows_to_iana.items())),
        "iana_to_windows": {
            zone: names[0] for zone, names in sorted(winzone.IANA_TO_MS_TIMEZONE_MAP.items())
        },
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
