from __future__ import annotations

import copy

import orjson
import pytest

from collector.snapshot import InvalidRecord, SessionKey, SnapshotBuilder, parse_session
from tests.ontap_pages import SEED_RECORD, SVM_UUID, session_record


def raw(*records: object) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


def test_seed_record_parses_with_its_lifetime_identity() -> None:
    session = parse_session(SEED_RECORD)

    assert session.key == SessionKey(SVM_UUID, "tpgroup1", 0, "61:62:63:64:65:00",
                                     "iqn.1992-01.example.com:string")
    assert session.key.path == f"{SVM_UUID}/tpgroup1/0"
    assert session.initiator_alias == "initiator_alias1"
    [connection] = session.connections
    assert connection.initiator_address == "10.10.10.7"
    assert connection.initiator_port == 55432
    assert connection.interface is not None and connection.interface.name == "lif1"
    assert [g.name for g in session.igroups] == ["igroup1"]


def test_same_path_with_another_initiator_is_another_session() -> None:
    first = parse_session(session_record(1, tsih=7, initiator="iqn.2000-01.com.a:one"))
    reused = parse_session(session_record(2, tsih=7, initiator="iqn.2000-01.com.b:two"))

    assert first.key.path == reused.key.path
    assert first.key != reused.key


def test_same_path_with_another_isid_is_another_session() -> None:
    first = parse_session(session_record(1, tsih=7, isid="40:00:01:37:00:01"))
    second = parse_session(session_record(1, tsih=7, isid="40:00:01:37:00:02"))

    assert first.key != second.key


def test_ipv6_addresses_are_normalised_so_equal_addresses_compare_equal() -> None:
    record = session_record(1, address="2001:DB8:0:0:0:0:0:1", lif_address="fd00::0:10")

    [connection] = parse_session(record).connections

    assert connection.initiator_address == "2001:db8::1"
    assert connection.interface is not None and connection.interface.address == "fd00::10"


def test_null_and_missing_optional_fields_are_none() -> None:
    record = session_record(1)
    record["initiator"] = {"name": "iqn.1994-05.com.redhat:bare", "alias": None}
    del record["target_portal_group_tag"]
    record["igroups"] = None
    record["connections"][0]["interface"] = None
    record["connections"][0]["authentication_type"] = None
    del record["connections"][0]["initiator_address"]

    session = parse_session(record)

    assert session.initiator_alias is None and session.initiator_comment is None
    assert session.target_portal_group_tag is None
    assert session.igroups == ()
    [connection] = session.connections
    assert (connection.interface, connection.authentication_type,
            connection.initiator_address, connection.initiator_port) == (None, None, None, None)


def test_unknown_fields_are_ignored() -> None:
    record = session_record(1)
    record["new_in_9_18"] = {"anything": [1, 2]}
    record["connections"][0]["data_digest"] = "crc32c"

    assert parse_session(record).key.tsih == 1


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop("tsih"), "tsih: missing"),
    (lambda r: r.__setitem__("tsih", "12"), "tsih: expected an integer, got a string"),
    (lambda r: r.__setitem__("tsih", True), "tsih: expected an integer, got a boolean"),
    (lambda r: r["svm"].pop("uuid"), "svm.uuid: missing"),
    (lambda r: r.__setitem__("initiator", "iqn"), "initiator: expected an object"),
    (lambda r: r["initiator"].__setitem__("name", ""), "initiator.name: missing"),
    (lambda r: r.__setitem__("connections", {}), "connections: expected a list"),
    (lambda r: r["connections"][0]["initiator_address"].__setitem__("address", "10.1.2"),
     "connections[0].initiator_address.address: '10.1.2' is not an IP address"),
    (lambda r: r["connections"][0]["initiator_address"].__setitem__("port", 70000),
     "connections[0].initiator_address.port: 70000 is not a TCP port"),
    (lambda r: r["connections"].append(copy.deepcopy(r["connections"][0])),
     "connections[1].cid: 1 appears twice"),
    (lambda r: r["igroups"][0].pop("uuid"), "igroups[0].uuid: missing"),
    (lambda r: r["connections"][0]["interface"].pop("uuid"),
     "connections[0].interface.uuid: missing"),
])
def test_malformed_record_is_rejected_naming_the_field(mutate, message: str) -> None:
    record = session_record(1)
    mutate(record)

    with pytest.raises(InvalidRecord) as caught:
        parse_session(record)

    assert message in str(caught.value)


def test_builder_keeps_rejected_records_raw_with_page_and_reason() -> None:
    bad = session_record(2)
    bad["tsih"] = None
    builder = SnapshotBuilder()
    builder.add_page(raw(session_record(1)))
    builder.add_page(raw(bad, "not even an object"))

    snapshot = builder.build()

    assert len(snapshot.sessions) == 1
    assert [(r.page, r.reason) for r in snapshot.rejected] == [
        (2, "tsih: missing"), (2, "record: expected an object, got a string")]
    assert snapshot.rejected[0].raw == bad
    assert (snapshot.pages, snapshot.records_seen) == (2, 3)


def test_record_repeated_across_pages_is_one_session_with_the_later_view() -> None:
    earlier = session_record(1, alias="before")
    later = session_record(1, alias="after")
    builder = SnapshotBuilder()
    builder.add_page(raw(earlier))
    builder.add_page(raw(later))

    snapshot = builder.build()

    assert len(snapshot.sessions) == 1
    assert next(iter(snapshot.sessions.values())).initiator_alias == "after"


def test_connections_and_igroups_are_ordered_so_equal_sessions_compare_equal() -> None:
    a = session_record(1, cids=(2, 1), igroups=("b", "a"))
    b = session_record(1, cids=(1, 2), igroups=("b", "a"))
    b["igroups"].reverse()
    b["connections"][0], b["connections"][1] = b["connections"][1], b["connections"][0]

    assert parse_session(a) == parse_session(b)


def test_a_remembered_record_is_not_parsed_again() -> None:
    first = SnapshotBuilder()
    first.add_page(raw(session_record(1), session_record(2)))
    earlier = first.build()

    again = SnapshotBuilder(known=set(earlier.digests.values()))
    again.add_page(raw(session_record(1), session_record(2, alias="renamed")))
    later = again.build()

    [one, two] = sorted(earlier.sessions)
    assert not later.complete and earlier.complete
    assert list(later.sessions) == [two]  # only the changed record was parsed
    assert later.sessions[two].initiator_alias == "renamed"
    assert later.unchanged == {earlier.digests[one]: 1}  # seen again, first on the walk
    assert later.digests[two] != earlier.digests[two]
    assert later.records_seen == 2


def test_a_rejected_record_is_rejected_again_in_the_next_walk() -> None:
    bad = session_record(1)
    bad["tsih"] = "x"
    first = SnapshotBuilder()
    first.add_page(raw(bad))

    again = SnapshotBuilder(known=set(first.build().digests.values()))
    again.add_page(raw(bad))

    assert len(again.build().rejected) == 1
