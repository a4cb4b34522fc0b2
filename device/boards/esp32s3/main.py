"""The ESP32-S3 board's entry point: the flash's /main.py calls it at every boot.

    # /main.py on the board's flash file system
    from device.boards.esp32s3.main import main
    main()

Reads the board's configuration (config.py: defaults, with /board.json on the flash merged
over them), mounts the evidence card, builds the parts (hal.py) and the dock link (a second
USB-CDC port, a UART, or MQTT over Wi-Fi), loads the device key from NVS, and hands them to
device/app.py, which boots the recorder the same way on every board. Logs go to the REPL's
console (UART0 or the built-in USB-CDC port), never onto the dock link.

A card that does not mount stops the boot with the indicator on "fault" (the board is left
at the REPL for service); nothing on the card is ever formatted.
"""

import asyncio

from device.boards.esp32s3 import config as board_config

# Imports of the core are inside main(): see the boot order in device/app.py.


def log(text: str) -> None:
    print("device: %s" % text)


def _read_secret(path: str) -> str:
    with open(path) as f:
        return f.read().rstrip("\r\n")


def _link(cfg: dict, device_id: str):
    """The dock link the configuration asks for: (its stream or None, the link)."""
    from device.boards.esp32s3 import hal as board

    kind = cfg["kind"]
    if kind in ("usb", "uart"):
        from device.link import FramedLink

        if kind == "usb":
            stream = board.open_usb_cdc(cfg["txbuf"], cfg["rxbuf"])
        else:
            stream = board.open_uart(cfg["uart"], cfg["tx"], cfg["rx"], cfg["baudrate"],
                                     cfg["txbuf"], cfg["rxbuf"])
        return stream, FramedLink(stream, log)
    if kind != "mqtt":
        raise ValueError("link kind must be usb, uart or mqtt, not %r" % kind)
    from device.mqtt_link import MqttLink

    board.wifi_up(cfg["wifi_ssid"], _read_secret(cfg["wifi_password_file"]), log)
    host, _, port = cfg["mqtt"].rpartition(":")
    tls = None
    if cfg["mqtt_ca"]:
        from device.mqtt import tls_context

        tls = tls_context(cfg["mqtt_ca"], cfg["mqtt_cert"], cfg["mqtt_key"])
    password = _read_secret(cfg["mqtt_password_file"]) if cfg["mqtt_password_file"] else None
    return None, MqttLink(host, int(port), device_id, log, user=cfg["mqtt_user"] or None,
                          password=password, tls=tls,
                          server_hostname=cfg["mqtt_server_name"] or None)


def main(config_path: str = board_config.PATH) -> None:
    import gc

    from device.boards.esp32s3 import hal as board

    cfg = board_config.load(config_path)
    cause = board.reset_cause()
    indicator = board.make_indicator(cfg["indicator"], log)
    indicator.show("booting")
    try:
        root = board.mount_card(cfg["card"], log)
    except (OSError, ValueError) as exc:
        indicator.show("fault")
        log("card: cannot mount: %r" % (exc,))
        raise
    device_id = board.device_id(cfg["device"]["id_prefix"])
    stream, link = _link(cfg["link"], device_id)

    from device import app

    camera_buf = app.camera_buffer()
    # The seed lives in NVS, not on the card (the simulation keeps it in a file on its card).
    key = app.load_key(root, log, seeds=board.NvsSeedStore(cfg["nvs"]["namespace"]))

    from device.hal import Hal

    bat = cfg["battery_main"]
    backup = cfg["battery_backup"]
    clock = board.RtcClock()
    camera = board.make_camera(cfg["camera"])

    def selftest() -> list:
        return clock.faults() + camera.faults()

    timeout_ms = cfg["watchdog"]["timeout_ms"]
    hal = Hal(
        device_id=device_id,
        clock=clock,
        battery_main=board.AdcBattery(bat["pin"], bat["divider"], bat["curve"], bat["samples"],
                                      bat["charging_pin"]),
        battery_backup=board.AdcBattery(backup["pin"], backup["divider"], backup["curve"],
                                        backup["samples"], backup["charging_pin"]),
        storage=board.CardStorage(root),
        camera=camera,
        indicator=indicator,
        link=stream,
        selftest=selftest,
        watchdog=board.Watchdog(timeout_ms) if timeout_ms > 0 else None,
    )
    buttons = cfg["buttons"]
    ui = board.Buttons(buttons["pins"], buttons["debounce_ms"], buttons["long_ms"])
    gc.collect()
    log("%s: heap %d bytes free (PSRAM)" % (device_id, gc.mem_free()))
    asyncio.run(app.serve(hal, link, key, log, root=root, camera_buf=camera_buf, ui=ui,
                          reset_cause=cause))
