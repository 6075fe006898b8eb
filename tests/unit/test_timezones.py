"""Windows <-> IANA zone names: the generated table, aliases, display names, fallbacks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ewssync import timezones
from ewssync.timezones import iana_to_windows, is_valid_zone, to_iana, windows_to_iana

# The current CLDR windowsZones table as tzlocal ships it: the source of the generated table,
# and the list of zones every one of which is tested here.
windows_tz = pytest.importorskip("tzlocal.windows_tz")

ROOT = Path(__file__).resolve().parents[2]
WINDOWS_IDS = sorted(windows_tz.win_tz)
IANA_ZONES = sorted(zone for zone in windows_tz.tz_win if zone.strip())


def offsets_2026(zone: str) -> list[timedelta]:
    tz = ZoneInfo(zone)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [(start + timedelta(hours=3 * i)).astimezone(tz).utcoffset() for i in range(2921)]


@pytest.mark.parametrize("windows_id", WINDOWS_IDS)
def test_every_windows_id_cldr_lists_maps_to_a_zone_zoneinfo_knows(windows_id):
    zone = windows_to_iana(windows_id)
    assert zone is not None
    assert is_valid_zone(zone)
    ZoneInfo(zone)  # loads
    # Same rules as CLDR's (possibly older) name for it.
    assert offsets_2026(zone) == offsets_2026(windows_tz.win_tz[windows_id])


def test_the_table_knows_the_windows_zones_added_since_exchangelibs_copy():
    assert len(WINDOWS_IDS) >= 142
    assert windows_to_iana("Alberta Standard Time") == "America/Edmonton"
    assert windows_to_iana("British Columbia Standard Time") == "America/Vancouver"
    assert windows_to_iana("Manitoba Standard Time") == "America/Winnipeg"
    assert iana_to_windows("America/Vancouver") == "British Columbia Standard Time"


@pytest.mark.parametrize("zone", IANA_ZONES)
def test_every_iana_zone_cldr_lists_gets_a_windows_zone_with_its_offsets(zone):
    if not is_valid_zone(zone):
        pytest.skip(f"{zone} is not in this host's tz database")
    windows = iana_to_windows(zone)
    assert windows is not None
    assert offsets_2026(windows_to_iana(windows)) == offsets_2026(zone), windows


@pytest.mark.parametrize("windows_id", WINDOWS_IDS)
def test_round_trip_gives_a_windows_id_with_the_same_offsets_over_2026(windows_id):
    zone = windows_to_iana(windows_id)
    back = iana_to_windows(zone)
    assert back is not None
    assert offsets_2026(windows_to_iana(back)) == offsets_2026(zone)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("  W. Europe Standard Time ", "Europe/Berlin"),
        ("w. europe standard time", "Europe/Berlin"),
        ("FLE Standard Time", "Europe/Kyiv"),  # canonical name, not CLDR's Europe/Kiev
        ("India Standard Time", "Asia/Kolkata"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("Newfoundland Standard Time", "America/St_Johns"),
        ("Line Islands Standard Time", "Pacific/Kiritimati"),
        ("UTC-11", "Etc/GMT+11"),
        # already IANA: itself (links included)
        ("Europe/Berlin", "Europe/Berlin"),
        ("Europe/Kiev", "Europe/Kiev"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        # UTC aliases
        ("UTC", "UTC"),
        ("Etc/UTC", "UTC"),
        ("GMT", "UTC"),
        ("Coordinated Universal Time", "UTC"),
        ("(UTC) Coordinated Universal Time", "UTC"),
        ("tzone://Microsoft/Utc", "UTC"),
        # display names: listed, older GMT spelling, localized (matched by city and offset)
        ("(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Berlin"),
        ("(GMT+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Berlin"),
        ("(UTC+01:00)  Brussels, Copenhagen, Madrid, Paris", "Europe/Paris"),
        ("(UTC-05:00) Eastern Time (US & Canada)", "America/New_York"),
        ("(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius", "Europe/Kyiv"),
        ("(UTC-03:30) Newfoundland", "America/St_Johns"),
        ("(UTC+01:00) Amsterdam, Berlin, Bern, Rom, Stockholm, Wien", "Europe/Amsterdam"),
        ("(UTC+01:00) Bruxelles, Copenhague, Madrid, Paris", "Europe/Madrid"),
        ("(UTC+05:30) Chennai, Kolkata, Mumbai, Neu-Delhi", "Asia/Kolkata"),
        # no place names a zone (Tokio, Osaka, Sapporo): unknown, not guessed from the offset
        ("(UTC+09:00) Osaka, Sapporo, Tokio", None),
        ("Mitteleuropäische Zeit", "Europe/Berlin"),
        # custom and unknown: None, the caller falls back
        ("Customized Time Zone", None),
        ("Customized Time Zone 1", None),
        ("tzone://Microsoft/Custom", None),
        ("(UTC+01:00) Tokyo", None),  # city and offset disagree
        ("(UTC-03:30) Neufundland", None),
        ("Mars Standard Time", None),
        ("localtime", None),  # the host's zone: never
        ("Factory", None),
        ("posixrules", None),
        ("europe/berlin", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_windows_to_iana(name, expected):
    assert windows_to_iana(name) == expected


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Berlin", "W. Europe Standard Time"),
        ("Europe/Kyiv", "FLE Standard Time"),
        ("Europe/Kiev", "FLE Standard Time"),
        ("Asia/Kolkata", "India Standard Time"),
        ("Asia/Calcutta", "India Standard Time"),
        ("America/Indiana/Indianapolis", "US Eastern Standard Time"),
        ("UTC", "UTC"),
        ("Etc/UTC", "UTC"),
        ("GMT", "UTC"),
        ("Europe/London", "GMT Standard Time"),
        ("Pacific/Pago_Pago", "UTC-11"),
        ("Not/AZone", None),
        ("localtime", None),
        ("Factory", None),
    ],
)
def test_iana_to_windows(zone, expected):
    assert iana_to_windows(zone) == expected


def test_iana_to_windows_for_a_zone_the_table_lacks_matches_offsets(monkeypatch):
    table = json.loads(json.dumps(timezones._table()))
    for name in ("Europe/Kyiv", "Europe/Kiev", "America/Ciudad_Juarez"):
        del table["iana_to_windows"][name]
    monkeypatch.setattr(timezones, "_table", lambda: table)
    # Kyiv, Bucharest, Helsinki... share EET/EEST: any of them is right for a new item.
    windows = iana_to_windows("Europe/Kyiv")
    assert windows in ("FLE Standard Time", "GTB Standard Time", "E. Europe Standard Time")
    assert offsets_2026(windows_to_iana(windows)) == offsets_2026("Europe/Kyiv")
    # Ciudad Juárez keeps US Mountain rules since 2022: same offsets as Denver in 2026.
    windows = iana_to_windows("America/Ciudad_Juarez")
    assert offsets_2026(windows_to_iana(windows)) == offsets_2026("America/Ciudad_Juarez")


@pytest.mark.parametrize(
    ("name", "fallback", "expected"),
    [
        ("Romance Standard Time", "Europe/Berlin", "Europe/Paris"),
        ("Asia/Tokyo", "Europe/Berlin", "Asia/Tokyo"),
        ("Customized Time Zone", "Europe/Berlin", "Europe/Berlin"),
        (None, "America/New_York", "America/New_York"),
        ("garbage", "UTC", "UTC"),
    ],
)
def test_to_iana(name, fallback, expected):
    assert to_iana(name, fallback) == expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("Europe/Berlin", True),
        ("UTC", True),
        ("Europe/Kiev", True),
        ("Etc/GMT+12", True),
        ("W. Europe Standard Time", False),
        ("localtime", False),
        ("Factory", False),
        ("posix/Europe/Berlin", False),
        ("../etc/passwd", False),
        ("/usr/share/zoneinfo/UTC", False),
        ("", False),
        (None, False),
    ],
)
def test_is_valid_zone(name, valid):
    assert is_valid_zone(name) is valid


@given(st.text(max_size=40))
def test_any_text_gives_a_valid_zone_or_none(name):
    zone = windows_to_iana(name)
    assert zone is None or is_valid_zone(zone)
    assert to_iana(name, "Europe/Berlin") in (zone, "Europe/Berlin")


def test_table_values_are_valid_zones():
    table = timezones._table()
    for section in ("windows_to_iana", "aliases", "display_names"):
        for name, zone in table[section].items():
            assert is_valid_zone(zone), (section, name, zone)
    for zone, windows in table["iana_to_windows"].items():
        assert windows in table["windows_to_iana"], (zone, windows)


def test_windows_ids_map_to_current_iana_names_not_backward_links():
    tzdata_zi = Path("/usr/share/zoneinfo/tzdata.zi")
    if not tzdata_zi.exists():
        pytest.skip("no tzdata.zi on this host to read tzdata's links from")
    links = {
        line.split()[2]
        for line in tzdata_zi.read_text().splitlines()
        if line.startswith("L ") and line.split()[2] != "UTC"
    }
    stale = {w: z for w, z in timezones._table()["windows_to_iana"].items() if z in links}
    assert stale == {}


def test_json_is_what_the_generator_produces():
    from tools import gen_windows_zones

    committed = (ROOT / "plugins/ewssync/data/windows_zones.json").read_text("utf-8")
    assert gen_windows_zones.render() == committed
    assert gen_windows_zones.OUT == ROOT / "plugins/ewssync/data/windows_zones.json"


def test_generator_writes_the_file(tmp_path, monkeypatch):
    from tools import gen_windows_zones

    out = tmp_path / "data" / "windows_zones.json"
    monkeypatch.setattr(gen_windows_zones, "OUT", out)
    assert gen_windows_zones.main([]) == 0
    assert gen_windows_zones.main(["--check"]) == 0
    assert json.loads(out.read_text("utf-8")) == timezones._table()
    out.write_text("{}", encoding="utf-8")
    assert gen_windows_zones.main(["--check"]) == 1
