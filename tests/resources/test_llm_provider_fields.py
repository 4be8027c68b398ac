"""LLMResource builds ProviderConfig from one declaration of the shared fields (issue 14).

Before, the resource re-declared ~15 ProviderConfig fields (own descriptions, own constraints,
``limits`` without ``None``) and copied them by hand; its config keys and defaults must not move.
"""

import dagster as dg
import pytest
from pydantic import SecretStr, ValidationError

from lakeloom.engine.provider import ProviderConfig
from lakeloom.resources.llm import PROVIDER_FIELDS, LLMResource

# The resource's Dagster config keys and their defaults, as they were before the change.
CONFIG_DEFAULTS = {
    "kind": "compatible",
    "base_url": None,
    "api_key": None,
    "api_key_env": None,
    "api_version": None,
    "deployment": None,
    "structured_output": "json_schema",
    "rpm": None,
    "tpm": None,
    "max_concurrency": 32,
    "timeout_s": 60.0,
    "max_attempts": 6,
    "unreachable_after": 20,
    "pool": None,
    "max_cost_usd": None,
    "cache": True,
    "cache_namespace": None,
    "price_model": None,
    "limiter_url": None,
    "prices": None,
    "limits": None,
}

# Where the resource deliberately differs from ProviderConfig (and why).
OWN_DEFAULTS = {"kind", "max_concurrency", "cache_namespace"}  # the resource's long-standing ones
OWN_DESCRIPTIONS = {"api_key", "api_key_env"}  # a dg.EnvVar string, read at run time


def test_config_keys_and_defaults_stay_the_same():
    fields = LLMResource.to_config_schema().as_field().config_type.fields
    assert set(fields) == set(CONFIG_DEFAULTS)
    for name, default in CONFIG_DEFAULTS.items():
        assert not fields[name].is_required, name
        assert fields[name].default_value == default, name


def test_shared_fields_take_providerconfigs_description_and_constraints():
    provider = ProviderConfig.model_fields
    assert set(PROVIDER_FIELDS) == set(LLMResource.model_fields) & set(provider)
    for name in PROVIDER_FIELDS:
        own, theirs = LLMResource.model_fields[name], provider[name]
        assert own.metadata == theirs.metadata, name
        if name not in OWN_DESCRIPTIONS:
            assert own.description == theirs.description, name
        if name not in OWN_DEFAULTS:
            assert own.default == theirs.default, name
    with pytest.raises(ValidationError, match="max_concurrency"):
        LLMResource(max_concurrency=4097)  # ProviderConfig's bound, not a second copy of it


def test_every_shared_field_reaches_the_provider_config():
    values = {
        "kind": "azure",
        "base_url": "https://x.openai.azure.com",
        "api_key": "sk-test-field-copy",
        "api_key_env": "MY_KEY",
        "api_version": "2024-10-21",
        "deployment": "dep",
        "structured_output": "json_object",
        "rpm": 7,
        "tpm": 700,
        "max_concurrency": 3,
        "timeout_s": 9.5,
        "max_attempts": 2,
        "unreachable_after": 4,
        "cache_namespace": "team",
        "price_model": "gpt-4o-mini",
        "limits": {"*": {"max_output": 50}},
    }
    assert set(values) == set(PROVIDER_FIELDS)  # a new shared field needs a value here
    config = LLMResource(**values).provider_config()
    for name, value in values.items():
        got = getattr(config, name)
        assert (got.get_secret_value() if isinstance(got, SecretStr) else got) == value, name


def test_limits_take_none_like_providerconfig_does():
    limits = {"*": {"max_output": None, "context_window": 4096}}
    llm = LLMResource(base_url="http://127.0.0.1:9/v1", limits=limits)
    assert llm.provider_config().limits == limits

    @dg.asset
    def uses(llm: LLMResource) -> None:
        assert llm.provider_config().limits == {"m": {"max_output": None}}

    result = dg.materialize(
        [uses],
        resources={"llm": LLMResource.configure_at_launch()},
        run_config={
            "resources": {
                "llm": {
                    "config": {
                        "base_url": "http://127.0.0.1:9/v1",
                        "limits": {"m": {"max_output": None}},
                    }
                }
            }
        },
    )
    assert result.success
