"""The cache is per provider by default (issue 17.11); sharing is an explicit namespace.

Two simulators on different ports serve the same model name. Before, the second one's rows
were answered from the first one's cache (a wrong key against the second server still gave
8 of 10 rows ``ok``).
"""

from lakeloom.resources.llm import LLMResource
from tests.fixtures.engine import chat_bodies


def _run(base_url: str, **options):
    engine = LLMResource(kind="compatible", base_url=base_url, **options).engine()
    return engine.run_bodies("chat.completions", chat_bodies(10))


def test_a_second_server_is_not_answered_from_the_first_servers_cache(sim_server):
    first, second = sim_server(), sim_server()
    assert _run(first.base_url).stats.cache_hits == 0
    assert first.stats()["served"] == 10
    again = _run(first.base_url + "/")  # the same provider, spelled differently
    assert again.stats.cache_hits == 10 and first.stats()["served"] == 10

    other = _run(second.base_url)
    assert other.stats.cache_hits == 0
    assert second.stats()["served"] == 10  # every row asked of the second server itself
    assert (other.results["status"] == "ok").all()


def test_servers_given_the_same_cache_namespace_share_answers(sim_server):
    first, second = sim_server(), sim_server()
    assert _run(first.base_url, cache_namespace="team-shared").stats.cache_hits == 0
    shared = _run(second.base_url, cache_namespace="team-shared")
    assert shared.stats.cache_hits == 10
    assert second.stats()["served"] == 0
