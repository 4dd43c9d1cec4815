"""Curation checks: is a sentence fit to become a concept vector?

A concept vector stands for one sentence read on its own, so a good sentence is a complete,
self-contained statement of moderate length: not a heading or fragment, not a line of code or
boilerplate, not an opening that leans on the sentence before ("It", "This", "They" ...), and not
a copy of a sentence the store already holds. Each check gives ``(name, passed, reason)`` with a
reason a person can read; a sentence is rejected when any check fails.

The verb check is a *heuristic*, chosen because it needs no model download: a sentence passes when
one of its words is in a closed list of auxiliaries and frequent English verbs (with their regular
inflections) or ends in a verb-forming suffix (-ize, -ify, -ate, -ed ...). It misses rare verbs
used in the present tense without a suffix and is fooled by nouns that look like verbs.

Near-duplicates (cosine above ``near_duplicate_cosine``) need vectors, so the store runs that check
when it encodes (see ``ConceptStore.encode_pending``).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

Check = tuple[str, bool, str]  # (name, passed, reason)

CHECK_NAMES = ("length", "verb", "context", "code_or_boilerplate", "duplicate", "near_duplicate")


@dataclass(frozen=True)
class CheckConfig:
    min_chars: int = 15
    min_words: int = 4
    max_chars: int = 300            # ingest splits sentences at ~200 chars (LCM); this catches edits and unsplittable runs
    max_words: int = 60
    near_duplicate_cosine: float = 0.95


# --- verbs ------------------------------------------------------------------------------------

_AUXILIARIES = """am is are was were be been being has have had having do does did done doing can could will would
shall should may might must cannot can't won't isn't aren't wasn't weren't doesn't don't didn't hasn't haven't
hadn't shouldn't wouldn't couldn't it's that's there's here's what's let's""".split()

_IRREGULAR = """became become began begin begun bent bind bound bit bled blew blown broke broken brought build built
burnt bought caught chose chosen came come cost cut dealt dug drew drawn drove driven drank drunk ate eaten fell fallen
fed felt fought found fled flew flown forbade forgot forgotten forgave froze frozen got gotten gave given went gone
grew grown hung heard hid hidden hit held hurt kept knew known laid led left lent let lay lain lit lost made meant met
paid put quit read rode ridden rang rung rose risen ran run said saw seen sought sold sent set shook shaken shone shot
showed shown shut sang sung sank sunk sat slept slid spoke spoken spent spun split spread stood stole stolen stuck
stung struck swore sworn swept swam swum swung took taken taught tore torn told thought threw thrown understood woke
woken wore worn won wound wrote written""".split()

# Frequent verbs (lemmas); regular inflections are generated below.
_LEMMAS = """accept access act add affect allow apply argue arrive ask assign assume attempt avoid base become
believe belong bind break bring build call cause change check choose claim close compare compile compute concern
consider consist contain continue control convert copy correspond create cross decide declare decrease define delete
depend describe design determine develop die differ disable discuss display divide do draw drive eat enable encode end
ensure enter equal evaluate exist expand expect explain express extend fail fall feel fill find finish fit follow force
forget form get give go grow handle happen hate help hide hold hope identify ignore implement imply import improve
include increase indicate inherit initialize insert inspect intend introduce invoke involve iterate join keep kill know
lead learn leave let lie like limit link list live load look lose love make manage match mean measure meet mention
merge miss modify move name need note notice observe obtain occur offer open operate order own pass pay perform permit
pick place plan play point prefer prepare present prevent print produce provide publish pull push put raise reach read
realize receive recognize record reduce refer reflect register reject relate release rely remain remember remove
repeat replace report represent require reserve reset resolve respond rest restrict result retain return reveal run
save say search see seem select sell send separate serve set share show sit skip solve sort specify speak spend split
start state stay stop store suggest supply support suppose surround take talk teach tell tend test think throw track
trade train transform treat trigger try turn understand unpack update use vary verify view visit wait walk want warn
watch wear win wish work wrap write yield
answer appear arrange attach bake behave belong boil borrow burn buy carry catch celebrate climb collect cook cool
cost count cover crash cry cut dance deliver destroy dig disappear discover drink drop dry earn eat enjoy escape
examine explore feed fight fix float flow fly fold freeze gain gather greet grow guess hang hear heat hunt hurry
invent jump kick knead knock land laugh lift listen lock marry melt mix mourn obey owe pack paint pour pray
protect prove punish reach rain recall repair rescue rise roll rule rush scatter settle shine shout sing sink
sleep slice slide smell smile snow spell spill stand steal sting stir suffer surprise survive swim taste tie
touch travel trust type wake wander wash weigh wonder worry""".split()

_VERB_SUFFIXES = ("ize", "izes", "ized", "ise", "ises", "ised", "ify", "ifies", "ified", "ates", "ated", "ed")


def _inflections(lemma: str) -> set[str]:
    """Regular forms of a verb: base, -s, -ed, -ing (with the common spelling rules)."""
    if lemma.endswith("e"):
        ed, ing = lemma + "d", lemma[:-1] + "ing"
    elif lemma.endswith("y") and lemma[-2:-1] not in "aeiou":
        ed, ing = lemma[:-1] + "ied", lemma + "ing"
    else:
        ed, ing = lemma + "ed", lemma + "ing"
    s = lemma + "es" if lemma.endswith(("s", "sh", "ch", "x", "z", "o")) else (
        lemma[:-1] + "ies" if lemma.endswith("y") and lemma[-2:-1] not in "aeiou" else lemma + "s")
    return {lemma, s, ed, ing}


VERBS = frozenset(_AUXILIARIES) | frozenset(_IRREGULAR) | frozenset(
    form for lemma in _LEMMAS for form in _inflections(lemma))

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def has_verb(text: str) -> bool:
    for w in words(text):
        w = w.lower().replace("’", "'")
        if w in VERBS or (len(w) > 5 and w.endswith(_VERB_SUFFIXES)):
            return True
    return False


# --- context-dependent openings -----------------------------------------------------------------

# Personal pronouns always point outside a standalone sentence.
_PRONOUN_OPENERS = {"it", "its", "they", "them", "their", "theirs", "he", "him", "his", "she", "her", "hers",
                    "we", "us", "our"}
# Demonstratives only when they stand alone ("This is ..."), not as determiners ("This statement ...").
_DEMONSTRATIVES = {"this", "that", "these", "those", "such"}
_CONTEXT_PHRASES = ("the former", "the latter", "as mentioned", "as described above", "see above", "as above",
                    "in this case", "in that case", "this way", "that way", "the above", "the following")


_EXPLETIVE_IT = re.compile(r"^it (is|was|would be|will be)\b.{0,80}?\b(to|that|whether|when|if)\b", re.IGNORECASE)


def context_opening(text: str) -> str | None:
    """The opening word(s) that refer to something outside the sentence, or None.

    An expletive "It is ... to/that ..." refers forward, inside the sentence, and passes."""
    low = text.strip().lower()
    if _EXPLETIVE_IT.match(low):
        return None
    for phrase in _CONTEXT_PHRASES:
        if low.startswith(phrase):
            return text.strip()[:len(phrase)]
    ws = words(text)
    if not ws:
        return None
    first = ws[0].lower()
    if first in _PRONOUN_OPENERS:
        return ws[0]
    if first in _DEMONSTRATIVES:
        nxt = ws[1].lower() if len(ws) > 1 else ""
        rest = text.strip()[len(ws[0]):].lstrip()
        # "This is", "That means", "This, however," -> stands alone; "This module" -> a determiner
        if not nxt or rest[:1] in ",;:.!?" or nxt in VERBS or nxt in {"also", "only", "then", "not"}:
            return ws[0]
    return None


# --- code and boilerplate -----------------------------------------------------------------------

_CODE_STRONG = re.compile(r"(>>>|::=|^\$ |^#include|^\s*(def|class|import|from|return|raise|lambda|async def)\s+\w"
                          r"|[{}]\s*$|==|!=|\+=|->|=>|&&|\|\||\w+\(\w*(,\s*\w+)*\)\s*[:=])")
_CODE_CHARS = set("=(){}[]<>;&|^%$#@\\~`")
_QUOTED = re.compile(r'"[^"]{0,80}"|`[^`]{0,80}`|\*[^*\s][^*]{0,40}\*')  # inline code and emphasis: fine in prose
_BOILERPLATE = re.compile(
    r"(all rights reserved|copyright|\(c\) \d{4}|©|click here|cookie|subscribe|sign up|log in|terms of (use|service)"
    r"|privacy policy|table of contents|previous page|next page|page \d+ of \d+|^see also\b|^https?://\S+$"
    r"|^\W*$)", re.IGNORECASE)


def code_or_boilerplate(text: str) -> str | None:
    """Why the text looks like code, markup or boilerplate rather than prose, or None."""
    s = text.strip()
    if _BOILERPLATE.search(s):
        return "looks like boilerplate (navigation, legal or link text)"
    if _CODE_STRONG.search(s):
        return "looks like code (prompt, grammar rule, statement or operator)"
    dense = [c for c in _QUOTED.sub("x", s) if not c.isspace()]
    if dense and sum(c in _CODE_CHARS for c in dense) / len(dense) > 0.05:
        return "looks like code (too many symbols for prose)"
    letters = sum(c.isalpha() for c in dense)
    if dense and letters / len(dense) < 0.6:
        return "mostly digits or symbols, not prose"
    return None


# --- the checks ---------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """The key for exact duplicates: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_checks(text: str, cfg: CheckConfig = CheckConfig(), duplicate_of: int | None = None) -> list[Check]:
    """All checks that need only the text; ``duplicate_of`` is the id of an earlier identical sentence."""
    n_chars, n_words = len(text), len(words(text))
    if n_chars < cfg.min_chars or n_words < cfg.min_words:
        length = ("length", False, f"too short: {n_words} words, {n_chars} characters "
                                   f"(needs {cfg.min_words} words and {cfg.min_chars} characters)")
    elif n_chars > cfg.max_chars or n_words > cfg.max_words:
        length = ("length", False, f"too long: {n_words} words, {n_chars} characters "
                                   f"(at most {cfg.max_words} words and {cfg.max_chars} characters)")
    else:
        length = ("length", True, f"{n_words} words, {n_chars} characters")
    verb = (("verb", True, "has a verb") if has_verb(text)
            else ("verb", False, "no verb found: a heading or fragment, not a statement (heuristic)"))
    opener = context_opening(text)
    context = (("context", True, "stands on its own") if opener is None
               else ("context", False, f'opens with "{opener}", which refers to something outside the sentence'))
    why = code_or_boilerplate(text)
    code = ("code_or_boilerplate", why is None, why or "reads as prose")
    dup = (("duplicate", True, "first occurrence") if duplicate_of is None
           else ("duplicate", False, f"same text as sentence #{duplicate_of}"))
    return [length, verb, context, code, dup]


def near_duplicate_check(other_id: int | None, cosine: float, cfg: CheckConfig = CheckConfig()) -> Check:
    if other_id is None:
        return ("near_duplicate", True, f"no stored sentence above cosine {cfg.near_duplicate_cosine:.2f}")
    return ("near_duplicate", False, f"cosine {cosine:.3f} with sentence #{other_id} "
                                     f"(above {cfg.near_duplicate_cosine:.2f})")


def passed(checks: list[Check]) -> bool:
    return all(ok for _, ok, _ in checks)
