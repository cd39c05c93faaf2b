"""Randomness is passed in like ``now`` (issue #21): with a seeded source, a command's answer is
the same bytes every time, and its keys are the source's next draws, in order."""

from __future__ import annotations

import random

from natsync.eas.provision import MAX_POLICY_KEY
from natsync.wbxml import E, Element, decode, encode
from tests.conftest import StoreFactory
from tests.eas.helpers import Phone

SEED = 21
NS = "Provision"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"


def _policy(*kids: Element) -> Element:
    return E(
        NS, "Provision", E(NS, "Policies", E(NS, "Policy", E(NS, "PolicyType", POLICY_TYPE), *kids))
    )


def _policy_key(body: bytes) -> str:
    key = decode(body).find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
    assert key
    return key


def _conversation(phone: Phone) -> list[bytes]:
    """Provision (both phases) and the first FolderSync, as the bytes the phone receives."""
    first = phone.call("Provision", _policy())
    second = phone.call(
        "Provision", _policy(E(NS, "PolicyKey", _policy_key(first.body)), E(NS, "Status", 1))
    )
    phone.policy_key = int(_policy_key(second.body))
    fh = "FolderHierarchy"
    hierarchy = phone.call("FolderSync", E(fh, "FolderSync", E(fh, "SyncKey", "0")))
    return [first.body, second.body, hierarchy.body]


def test_a_seeded_source_gives_the_same_answers_byte_for_byte(store_factory: StoreFactory) -> None:
    once = _conversation(Phone(store_factory(), rng=random.Random(SEED)))
    again = _conversation(Phone(store_factory(), rng=random.Random(SEED)))
    assert once == again

    draws = random.Random(SEED)
    temporary = draws.randrange(MAX_POLICY_KEY - 1) + 1
    final = draws.randrange(MAX_POLICY_KEY - 1) + 1
    sync_key = f"{{{draws.randbytes(4).hex()}}}1"
    assert _policy_key(once[0]) == str(temporary)
    # The whole acknowledgement answer, byte for byte (MS-ASPROV 2.2.2.42: the final key).
    expected = E(
        NS,
        "Provision",
        E(NS, "Status", 1),
        E(
            NS,
            "Policies",
            E(
                NS,
                "Policy",
                E(NS, "PolicyType", POLICY_TYPE),
                E(NS, "Status", 1),
                E(NS, "PolicyKey", final),
            ),
        ),
    )
    assert once[1] == encode(expected)
    assert decode(once[2]).child_text("SyncKey") == sync_key


def test_the_server_source_differs_between_phones(store_factory: StoreFactory) -> None:
    """Without a seed (the server's SystemRandom) two devices get different keys."""
    store = store_factory()
    keys = {
        _policy_key(Phone(store, device_id=f"p{n}").call("Provision", _policy()).body)
        for n in range(3)
    }
    assert len(keys) == 3
