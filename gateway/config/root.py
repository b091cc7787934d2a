"""The whole configuration: identity, devices, tags, loop, store, uplink, observability."""

from __future__ import annotations

from typing import Annotated

from pydantic import Discriminator, Field
from pydantic import Tag as UnionTag
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.config.common import Name, StrictModel
from gateway.config.devices import (
    TAG_PROTOCOL,
    DeviceSettings,
    ModbusDeviceSettings,
    ModbusTagSettings,
    OpcUaDeviceSettings,
    OpcUaTagSettings,
)
from gateway.config.loop import LoopSettings
from gateway.config.mqtt import MqttSettings
from gateway.config.observability import LogSettings, MetricsSettings
from gateway.config.reporting import ReportingSettings
from gateway.config.sparkplug import SparkplugSettings
from gateway.config.store import StoreSettings
from gateway.domain.model import Tag

ENV_PREFIX = "GATEWAY_"
ENV_NESTED_DELIMITER = "__"


class Identity(StrictModel):
    site: Name = Field(description="Site id, used in topics and metrics.")
    gateway_id: Name = Field(description="This gateway's id within the site.")
    description: str = ""


TopLevelTag = Annotated[
    Annotated[ModbusTagSettings, UnionTag("modbus")] | Annotated[OpcUaTagSettings, UnionTag("opcua")],
    Discriminator(TAG_PROTOCOL),
]


class GatewaySettings(BaseSettings):
    """Root of the configuration file. Environment variables ``GATEWAY_SECTION__FIELD`` override the file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    gateway: Identity
    log: LogSettings = Field(default_factory=LogSettings)
    devices: list[DeviceSettings] = Field(default_factory=list)
    tags: list[TopLevelTag] = Field(
        default_factory=list, description="Tags listed outside their device; each names its device."
    )
    loop: LoopSettings = Field(default_factory=LoopSettings)
    reporting: ReportingSettings = Field(default_factory=ReportingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init arguments; the environment must win over the file.
        return (env_settings, init_settings)

    def device(self, name: str) -> ModbusDeviceSettings | OpcUaDeviceSettings:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)

    def without_tags(self) -> GatewaySettings:
        """These settings without their tag entries (each device's list and the top-level one): what a running
        gateway keeps once its adapters hold the domain tags (``tags_of``). At 10 000 tags the entries are 12 MB of
        models that nothing reads after the start (``bench/memory.py``)."""
        devices = [dev.model_copy(update={"tags": []}) for dev in self.devices]
        return self.model_copy(update={"devices": devices, "tags": []})

    def tags_of(self, device: str) -> list[Tag]:
        """Domain tags of one device: its own list and the top-level tags that name it."""
        dev = self.device(device)
        own = [t.to_domain(dev.name) for t in dev.tags]
        return own + [t.to_domain(dev.name) for t in self.tags if t.device == dev.name]

    def all_tags(self) -> dict[str, Tag]:
        """Every configured tag of every enabled device, by name."""
        return {t.name: t for dev in self.devices if dev.enabled for t in self.tags_of(dev.name)}

    def client_id(self) -> str:
        return self.mqtt.client_id or f"gw-{self.gateway.site}-{self.gateway.gateway_id}"
