"""Regenerate plugins/ewssync/data/windows_zones.json from tzlocal's CLDR windowsZones table.

Run: .venv/bin/python -m tools.gen_windows_zones   (the package itself never imports exchangelib
outside hook.py/exchange.py, so the table is shipped as data). ``--check`` exits 1 when the
committed file differs from what this script would write.

The output depends only on tzlocal's windows_tz module (CLDR's windowsZones.xml, kept current by
tzlocal's releases; pinned in requirements-dev.txt) and the curated lists below, not on the
host's tz database, so it is reproducible. exchangelib ships an older copy (CLDR 2021a) that
lacks zones Windows added since (Alberta, British Columbia, Manitoba Standard Time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "plugins" / "ewssync" / "data" / "windows_zones.json"

# CLDR still names some zones by their old IANA names. Both work
# with zoneinfo, but the app stores the current name (tzdata "backward" links).
CANONICAL_IANA = {
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "America/Godthab": "America/Nuuk",
    "America/Indianapolis": "America/Indiana/Indianapolis",
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon",
    "Europe/Kiev": "Europe/Kyiv",
    "Etc/UTC": "UTC",
}

# Names for UTC that servers and clients send instead of a Windows id.
UTC_ALIASES = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "GMT": "UTC",
    "Greenwich Mean Time": "UTC",  # bare: UTC+0 without DST (London is "GMT Standard Time")
    "Coordinated Universal Time": "UTC",
    "(UTC) Coordinated Universal Time": "UTC",
    "(UTC+00:00) Coordinated Universal Time": "UTC",
    "tzone://Microsoft/Utc": "UTC",
}

# Localized standard names seen in the wild (read: exchangelib issues #541, #310, #1197).
# Unbounded in general; only names whose meaning is certain are listed.
LOCALIZED_NAMES = {
    "Mitteleuropäische Zeit": "Europe/Berlin",
    "Mitteleuropäische Sommerzeit": "Europe/Berlin",
}

# Windows display names (en-US, Windows 10/11 registry "Display"), which older servers and some
# clients send as the zone name. Display names not listed here are matched at run time by their
# offset and city names (timezones._match_display_name).
DISPLAY_NAMES = {
    "(UTC-12:00) International Date Line West": "Etc/GMT+12",
    "(UTC-11:00) Coordinated Universal Time-11": "Etc/GMT+11",
    "(UTC-10:00) Aleutian Islands": "America/Adak",
    "(UTC-10:00) Hawaii": "Pacific/Honolulu",
    "(UTC-09:30) Marquesas Islands": "Pacific/Marquesas",
    "(UTC-09:00) Alaska": "America/Anchorage",
    "(UTC-08:00) Baja California": "America/Tijuana",
    "(UTC-08:00) Pacific Time (US & Canada)": "America/Los_Angeles",
    "(UTC-07:00) Arizona": "America/Phoenix",
    "(UTC-07:00) Chihuahua, La Paz, Mazatlan": "America/Mazatlan",
    "(UTC-07:00) La Paz, Mazatlan": "America/Mazatlan",
    "(UTC-07:00) Mountain Time (US & Canada)": "America/Denver",
    "(UTC-06:00) Central America": "America/Guatemala",
    "(UTC-06:00) Central Time (US & Canada)": "America/Chicago",
    "(UTC-06:00) Guadalajara, Mexico City, Monterrey": "America/Mexico_City",
    "(UTC-06:00) Saskatchewan": "America/Regina",
    "(UTC-05:00) Bogota, Lima, Quito, Rio Branco": "America/Bogota",
    "(UTC-05:00) Eastern Time (US & Canada)": "America/New_York",
    "(UTC-05:00) Indiana (East)": "America/Indiana/Indianapolis",
    "(UTC-04:00) Atlantic Time (Canada)": "America/Halifax",
    "(UTC-04:00) Georgetown, La Paz, Manaus, San Juan": "America/La_Paz",
    "(UTC-04:00) Santiago": "America/Santiago",
    "(UTC-03:30) Newfoundland": "America/St_Johns",
    "(UTC-03:00) Brasilia": "America/Sao_Paulo",
    "(UTC-03:00) City of Buenos Aires": "America/Argentina/Buenos_Aires",
    "(UTC-02:00) Coordinated Universal Time-02": "Etc/GMT+2",
    "(UTC-01:00) Azores": "Atlantic/Azores",
    "(UTC-01:00) Cabo Verde Is.": "Atlantic/Cape_Verde",
    "(UTC+00:00) Dublin, Edinburgh, Lisbon, London": "Europe/London",
    "(UTC) Dublin, Edinburgh, Lisbon, London": "Europe/London",
    "(UTC+00:00) Monrovia, Reykjavik": "Atlantic/Reykjavik",
    "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna": "Europe/Berlin",
    "(UTC+01:00) Belgrade, Bratislava, Budapest, Ljubljana, Prague": "Europe/Budapest",
    "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris": "Europe/Paris",
    "(UTC+01:00) Casablanca": "Africa/Casablanca",
    "(UTC+01:00) Sarajevo, Skopje, Warsaw, Zagreb": "Europe/Warsaw",
    "(UTC+01:00) West Central Africa": "Africa/Lagos",
    "(UTC+02:00) Athens, Bucharest": "Europe/Bucharest",
    "(UTC+02:00) Cairo": "Africa/Cairo",
    "(UTC+02:00) Harare, Pretoria": "Africa/Johannesburg",
    "(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius": "Europe/Kyiv",
    "(UTC+02:00) Jerusalem": "Asia/Jerusalem",
    "(UTC+02:00) Kaliningrad": "Europe/Kaliningrad",
    "(UTC+03:00) Baghdad": "Asia/Baghdad",
    "(UTC+03:00) Istanbul": "Europe/Istanbul",
    "(UTC+03:00) Kuwait, Riyadh": "Asia/Riyadh",
    "(UTC+03:00) Minsk": "Europe/Minsk",
    "(UTC+03:00) Moscow, St. Petersburg": "Europe/Moscow",
    "(UTC+03:00) Nairobi": "Africa/Nairobi",
    "(UTC+03:30) Tehran": "Asia/Tehran",
    "(UTC+04:00) Abu Dhabi, Muscat": "Asia/Dubai",
    "(UTC+04:30) Kabul": "Asia/Kabul",
    "(UTC+05:00) Ashgabat, Tashkent": "Asia/Tashkent",
    "(UTC+05:00) Islamabad, Karachi": "Asia/Karachi",
    "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi": "Asia/Kolkata",
    "(UTC+05:30) Sri Jayawardenepura": "Asia/Colombo",
    "(UTC+05:45) Kathmandu": "Asia/Kathmandu",
    "(UTC+06:00) Dhaka": "Asia/Dhaka",
    "(UTC+06:30) Yangon (Rangoon)": "Asia/Yangon",
    "(UTC+07:00) Bangkok, Hanoi, Jakarta": "Asia/Bangkok",
    "(UTC+08:00) Beijing, Chongqing, Hong Kong, Urumqi": "Asia/Shanghai",
    "(UTC+08:00) Kuala Lumpur, Singapore": "Asia/Singapore",
    "(UTC+08:00) Perth": "Australia/Perth",
    "(UTC+08:00) Taipei": "Asia/Taipei",
    "(UTC+09:00) Osaka, Sapporo, Tokyo": "Asia/Tokyo",
    "(UTC+09:00) Seoul": "Asia/Seoul",
    "(UTC+09:30) Adelaide": "Australia/Adelaide",
    "(UTC+09:30) Darwin": "Australia/Darwin",
    "(UTC+10:00) Brisbane": "Australia/Brisbane",
    "(UTC+10:00) Canberra, Melbourne, Sydney": "Australia/Sydney",
    "(UTC+10:00) Guam, Port Moresby": "Pacific/Port_Moresby",
    "(UTC+10:00) Hobart": "Australia/Hobart",
    "(UTC+12:00) Auckland, Wellington": "Pacific/Auckland",
    "(UTC+12:00) Fiji": "Pacific/Fiji",
    "(UTC+13:00) Nuku'alofa": "Pacific/Tongatapu",
    "(UTC+13:00) Samoa": "Pacific/Apia",
    "(UTC+14:00) Kiritimati Island": "Pacific/Kiritimati",
}

# IANA names that are not zones to store ("Factory" is tzdata's placeholder).
EXCLUDED_IANA = {"Factory"}


def build() -> dict:
    from importlib.metadata import version

    from tzlocal import windows_tz

    def canonical(zone: str) -> str:
        return CANONICAL_IANA.get(zone, zone)

    windows_ids = {name: canonical(zone) for name, zone in windows_tz.win_tz.items()}
    iana_to_windows = {
        zone: windows
        for zone, windows in windows_tz.tz_win.items()
        if zone.strip() and zone not in EXCLUDED_IANA  # tzlocal 5.4.5 has an empty key
    }
    # Each Windows id's own zone maps back to that id (CLDR's territory rows could disagree).
    for windows, zone in windows_ids.items():
        iana_to_windows[zone] = windows
    iana_to_windows["UTC"] = "UTC"
    aliases = {**UTC_ALIASES, **LOCALIZED_NAMES}
    return {
        "source": (
            f"tzlocal {version('tzlocal')} windows_tz (CLDR windowsZones) "
            "+ curated lists in tools/gen_windows_zones.py"
        ),
        "windows_to_iana": dict(sorted(windows_ids.items())),
        "aliases": dict(sorted(aliases.items())),
        "display_names": {name: canonical(zone) for name, zone in sorted(DISPLAY_NAMES.items())},
        "iana_to_windows": dict(sorted(iana_to_windows.items())),
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python -m tools.gen_windows_zones", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
