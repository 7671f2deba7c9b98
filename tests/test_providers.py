"""The provider table: complete, consistent, and the one place provider facts come from."""

from __future__ import annotations

import pytest

from monitor.providers import (
    PROVIDERS,
    PROVISIONING_STATUSES,
    CloudProvider,
    ConnectionStatus,
    inferred_provider,
    provider_names,
)
from monitor.simulator.documents import _V2_SHAPES

AZURE_ID = (
    "/subscriptions/0f7a3c2e-1b4d-4e8f-9a6b-5c3d2e1f0a9b/resourceGroups/rg-data"
    "/providers/Microsoft.Network/privateEndpoints/pe-orders"
)


def test_every_provider_has_exactly_one_spec() -> None:
    assert list(PROVIDERS) == list(CloudProvider)
    assert all(spec.provider is provider for provider, spec in PROVIDERS.items())


@pytest.mark.parametrize("provider", list(CloudProvider), ids=str)
def test_each_state_set_ends_with_unknown_and_holds_its_provisioning(
    provider: CloudProvider,
) -> None:
    spec = PROVIDERS[provider]
    assert spec.endpoint_statuses[-1] is ConnectionStatus.UNKNOWN
    assert set(spec.provisioning) <= set(spec.endpoint_statuses)
    assert ConnectionStatus.AVAILABLE in spec.endpoint_statuses


def test_provisioning_statuses_are_every_providers_plus_v1_none() -> None:
    assert {
        ConnectionStatus.NONE,
        ConnectionStatus.PENDING_ACCEPTANCE,
        ConnectionStatus.PENDING,
        ConnectionStatus.INITIATING,
        ConnectionStatus.VERIFIED,
    } == PROVISIONING_STATUSES


@pytest.mark.parametrize(
    ("endpoint_id", "provider"),
    [
        ("vpce-0b9c5701325cb15dd", CloudProvider.AWS),
        (AZURE_ID, CloudProvider.AZURE),
        ("analytics-psc", CloudProvider.GCP),
    ],
)
def test_an_ids_form_shows_its_provider_whose_rule_it_matches(
    endpoint_id: str, provider: CloudProvider
) -> None:
    assert inferred_provider(endpoint_id) is provider
    assert PROVIDERS[provider].endpoint_id.matches(endpoint_id)


def test_azure_ids_compare_without_case_and_name_their_endpoint() -> None:
    azure = PROVIDERS[CloudProvider.AZURE]
    assert azure.comparable_id(AZURE_ID.upper()) == azure.comparable_id(AZURE_ID)
    assert azure.display_name(AZURE_ID) == "pe-orders"
    assert PROVIDERS[CloudProvider.GCP].display_name("analytics-psc") is None


@pytest.mark.parametrize(
    ("resource_group", "name", "accepted"),
    [
        ("g" * 90, "n" * 80, True),
        ("g" * 91, "pe", False),
        ("rg", "n" * 81, False),
        ("données-(prod)", "pe_orders.1", True),  # Unicode letters, the spec's parentheses
        ("rg data", "pe", False),
    ],
)
def test_azure_ids_take_the_wider_of_azures_and_the_specs_rules(
    resource_group: str, name: str, accepted: bool
) -> None:
    """docs/atlas-v2-fidelity.md: the bounds are wider than Azure's documented 64-character
    private endpoint names on purpose, as a real id refused would mean a blind endpoint."""
    endpoint_id = (
        "/subscriptions/0f7a3c2e-1b4d-4e8f-9a6b-5c3d2e1f0a9b"
        f"/resourceGroups/{resource_group}/providers/Microsoft.Network/privateEndpoints/{name}"
    )
    assert PROVIDERS[CloudProvider.AZURE].endpoint_id.matches(endpoint_id) is accepted


def test_messages_name_the_providers_a_rule_picks() -> None:
    assert provider_names(lambda spec: spec.can_be_added) == "AWS"
    assert provider_names(lambda spec: spec.served_by_v1) == "AWS"
    assert provider_names(lambda spec: True) == "AWS and AZURE and GCP"


def test_the_simulator_has_one_v2_shape_per_provider() -> None:
    """A fourth provider is one ProviderSpec plus one simulator shape; neither can be missed."""
    assert set(_V2_SHAPES) == set(CloudProvider)
