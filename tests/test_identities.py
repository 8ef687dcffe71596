"""Identities authority depends on: one canonical principal per person, or a refusal that says
what to send instead (outbox/identities.py)."""

from __future__ import annotations

import pytest

from outbox.identities import (
    InvalidIdentity,
    Principal,
    PrincipalKind,
    canonical_identity,
    parse_principal,
    principals_in,
)

LEAD = "user:lead@example.com"


def refusal(text: str) -> str:
    with pytest.raises(InvalidIdentity) as caught:
        parse_principal(text)
    assert isinstance(caught.value, ValueError)
    return caught.value.message


# --- every spelling of one address is one person ------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "lead@example.com",
        "LEAD@EXAMPLE.COM",
        "Lead@Example.com",
        "lead@EXAMPLE.com",
        "user:lead@example.com",
        "user:Lead@Example.com",
        "USER:lead@example.com",
        "User:LEAD@example.COM",
        "  lead@example.com  ",
        "\u00a0lead@example.com\u3000",  # no-break and ideographic spaces around it
    ],
)
def test_case_prefix_and_surrounding_space_do_not_make_another_person(spelling: str) -> None:
    assert parse_principal(spelling) == Principal(PrincipalKind.EMAIL, "lead@example.com")
    assert canonical_identity(spelling) == LEAD


@pytest.mark.parametrize(
    "spelling",
    [
        "ｌｅａｄ@example.com",  # fullwidth letters
        "lead＠example.com",  # fullwidth commercial at
        "lead@ＥＸＡＭＰＬＥ．ＣＯＭ",  # fullwidth domain and full stop
        "ｕｓｅｒ：lead@example.com",  # fullwidth prefix and colon
        "\U0001d425ead@example.com",  # mathematical bold small l
        "ⓛead@example.com",  # circled letter l
    ],
)
def test_compatibility_forms_fold_to_the_ascii_address_they_stand_for(spelling: str) -> None:
    assert canonical_identity(spelling) == LEAD


def test_compatibility_letters_inside_a_word_fold_too() -> None:
    # KELVIN SIGN and LATIN SMALL LETTER LONG S are compatibility forms of K and s.
    assert canonical_identity("\u212aate@example.com") == "user:kate@example.com"
    assert canonical_identity("ro\u017fe@example.com") == "user:rose@example.com"


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("ada@bücher.example", "user:ada@xn--bcher-kva.example"),
        ("ada@BÜCHER.example", "user:ada@xn--bcher-kva.example"),
        ("ada@xn--bcher-kva.example", "user:ada@xn--bcher-kva.example"),
        ("ada@XN--BCHER-KVA.example", "user:ada@xn--bcher-kva.example"),
        ("user:ada@bu\u0308cher.example", "user:ada@xn--bcher-kva.example"),  # decomposed ü
    ],
)
def test_international_domains_have_one_form_the_idna_one(spelling: str, canonical: str) -> None:
    assert canonical_identity(spelling) == canonical


def test_a_look_alike_domain_is_a_different_person_and_looks_different() -> None:
    # Cyrillic а in the domain: a different domain, shown as xn-- so nobody mistakes it.
    canonical = canonical_identity("lead@ex\u0430mple.com")
    assert canonical != LEAD
    assert canonical.startswith("user:lead@xn--")


def test_the_canonical_form_parses_to_itself() -> None:
    for text in ["Lead@Example.com", "ada@bücher.example", "user:Alice", "slack:u0123abc", "ｌｅａｄ@example.com"]:
        canonical = canonical_identity(text)
        assert canonical_identity(canonical) == canonical


def test_plus_and_dots_are_part_of_the_address() -> None:
    # Sub-addressing is a provider convention, not a rule: lead+ops@ is compared as written.
    assert canonical_identity("lead+ops@example.com") == "user:lead+ops@example.com"
    assert canonical_identity("first.last@example.com") == "user:first.last@example.com"


# --- display names, mailto: and other wrappers are refused, with the bare address to send ---


@pytest.mark.parametrize(
    "wrapped",
    [
        "Lead <lead@example.com>",
        "<lead@example.com>",
        '"Lead" <lead@example.com>',
        '"lead@example.com"',
        "Lead<lead@example.com>",
        "user:Lead <lead@example.com>",
        "Lead (the lead) <lead@example.com>",
        "Lead ＜lead@example.com＞",  # fullwidth angle brackets become < > under NFKC
    ],
)
def test_display_names_and_angle_brackets_are_refused_naming_the_bare_address(wrapped: str) -> None:
    message = refusal(wrapped)
    assert "display name" in message
    assert "lead@example.com" in message


@pytest.mark.parametrize(
    "uri",
    ["mailto:lead@example.com", "MAILTO:lead@example.com", "MailTo:Lead@Example.com", "ｍａｉｌｔｏ:lead@example.com"],
)
def test_mailto_uris_are_refused_with_the_address_to_send(uri: str) -> None:
    message = refusal(uri)
    assert "mailto:" in message
    assert "send the bare address" in message


@pytest.mark.parametrize(
    "nested", ["user:mailto:lead@example.com", "user:user:lead@example.com", "slack:user:U0123ABC", "user:lead:x"]
)
def test_one_prefix_names_one_identity(nested: str) -> None:
    assert "not one identity" in refusal(nested)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("agent:crm-bot", "an agent, not a person"),
        ("role:approver-http", "a role, not a person"),
        ("http:lead@example.com", "unknown prefix"),
        ("email:lead@example.com", "unknown prefix"),
    ],
)
def test_prefixes_that_do_not_name_a_person_are_refused(text: str, says: str) -> None:
    assert says in refusal(text)


# --- invisible characters: format (Cf), control (Cc), separators ---------------------------


@pytest.mark.parametrize(
    "char",
    [
        "\u200b",  # zero width space
        "\u200c",  # zero width non-joiner
        "\u200d",  # zero width joiner
        "\u2060",  # word joiner
        "\ufeff",  # byte order mark
        "\u00ad",  # soft hyphen
        "\u180e",  # Mongolian vowel separator
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u200f",  # right-to-left mark
        "\U000e0041",  # tag latin capital letter a
    ],
)
@pytest.mark.parametrize("where", ["end", "start", "local", "domain"])
def test_format_characters_are_refused_wherever_they_are(char: str, where: str) -> None:
    text = {
        "end": f"lead@example.com{char}",
        "start": f"{char}lead@example.com",
        "local": f"le{char}ad@example.com",
        "domain": f"lead@exam{char}ple.com",
    }[where]
    message = refusal(text)
    assert f"U+{ord(char):04X}" in message
    assert "invisible" in message


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"])
def test_control_characters_and_line_separators_are_refused(char: str) -> None:
    message = refusal(f"lead@example.com{char}")
    assert f"U+{ord(char):04X}" in message


@pytest.mark.parametrize("text", ["\ud800lead@example.com", "lead@example.com\udfff", "lead\ue000@example.com"])
def test_surrogates_and_private_use_characters_are_refused(text: str) -> None:
    refusal(text)


def test_messages_show_hidden_characters_escaped() -> None:
    message = refusal("lead@example.com\u202e")
    assert "\u202e" not in message
    assert "\\u202e" in message


# --- whitespace, garbage and lengths ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["lead @example.com", "lead@ example.com", "user: lead@example.com", "slack: U0123ABC", "lead\u3000@example.com"],
)
def test_whitespace_inside_an_identity_is_refused(text: str) -> None:
    assert "whitespace" in refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "lead",
        "U0123ABC",
        "@example.com",
        "lead@",
        "lead@@example.com",
        "lead@example",
        "lead@localhost",
        "lead@example.com.",
        "lead..x@example.com",
        ".lead@example.com",
        "lead@[127.0.0.1]",
        "lead@ex_ample.com",
        "lead@-example.com",
        "le\u0430d@example.com",  # Cyrillic а in the local part: not ASCII
        "lead@example.com,other@example.com",
        "lead@example.com;other@example.com",
        "user:",
        "slack:",
        ":",
        "user:lead@",
    ],
)
def test_what_is_not_one_address_or_identity_is_refused_with_what_to_send(text: str) -> None:
    message = refusal(text)
    assert message


def test_a_bare_name_is_refused_with_the_prefixed_form_to_send() -> None:
    assert "write user:bob" in refusal("Bob")


def test_overlong_input_is_refused_before_normalisation() -> None:
    assert "longer than" in refusal("ﷺ" * 400)  # each expands to 18 characters under NFKC
    # A valid address whose canonical form would not fit the audit log's actor column.
    assert "longer than" in refusal("a" * 64 + "@" + "b" * 60 + "." + "c" * 60 + ".example.com")


def test_a_non_string_is_refused() -> None:
    refusal(42)  # type: ignore[arg-type]


# --- user:<name> and slack:<id> --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("user:alice", "user:alice"),
        ("user:Alice", "user:alice"),
        ("USER:ALICE", "user:alice"),
        ("user:ａｌｉｃｅ", "user:alice"),
        ("user:ops.on-call_1", "user:ops.on-call_1"),
        ("user:7", "user:7"),
    ],
)
def test_user_names_are_case_folded_ascii(text: str, canonical: str) -> None:
    principal = parse_principal(text)
    assert principal.kind is PrincipalKind.NAME
    assert principal.canonical == canonical


@pytest.mark.parametrize(
    "text", ["user:al ice", "user:alice!", "user:-alice", "user:al/ice", "user:\u0430lice", "user:" + "a" * 65]
)
def test_user_names_outside_the_safe_alphabet_are_refused(text: str) -> None:
    refusal(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("slack:U0123ABC", "slack:U0123ABC"),
        ("slack:u0123abc", "slack:U0123ABC"),
        ("SLACK:U0123ABC", "slack:U0123ABC"),
        ("slack:W024BE7LH", "slack:W024BE7LH"),
        ("slack:Ｕ０１２３ＡＢＣ", "slack:U0123ABC"),
    ],
)
def test_slack_identities_are_user_ids_in_upper_case(text: str, canonical: str) -> None:
    principal = parse_principal(text)
    assert principal.kind is PrincipalKind.SLACK
    assert principal.canonical == canonical


@pytest.mark.parametrize(
    "text",
    [
        "slack:@lead",
        "slack:lead",
        "slack:<@U0123ABC>",
        "slack:U0",
        "slack:T0TEAM",
        "slack:U0123-ABC",
        "slack:u0123\u00df",
    ],
)
def test_slack_display_names_handles_and_other_ids_are_refused(text: str) -> None:
    refusal(text)


# --- values stored before identities were parsed ---------------------------------------------


@pytest.mark.parametrize(
    "stored",
    [
        "Lead <lead@example.com>",
        '"Lead" <LEAD@example.com>',
        "mailto:lead@example.com",
        "MAILTO:Lead@Example.com",
        "lead@example.com\u200b",
        "\u202elead@example.com",
        "user:lead@example.com\u2060",
        "user:mailto:lead@example.com",
        "Lead <mailto:lead@example.com>",
        "lead@example.com (the lead)",
    ],
)
def test_an_old_stored_spelling_still_names_the_person_in_it(stored: str) -> None:
    assert LEAD in {p.canonical for p in principals_in(stored)}


def test_an_old_stored_list_names_every_person_in_it() -> None:
    found = {p.canonical for p in principals_in("Lead <lead@example.com>, Ops <ops@example.org>")}
    assert found == {LEAD, "user:ops@example.org"}


def test_an_old_stored_value_that_names_nobody_names_nobody() -> None:
    assert principals_in("the team") == frozenset()
    assert principals_in("") == frozenset()


def test_a_canonical_stored_value_is_exactly_its_principal() -> None:
    assert principals_in(LEAD) == frozenset({Principal(PrincipalKind.EMAIL, "lead@example.com")})
