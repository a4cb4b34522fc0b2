"""The ESP32-S3 board's configuration: pins, divider ratios, the dock link, the card.

The defaults below are the reference wiring (README.md beside this file: an ESP32-S3-WROOM-1
N16R8 module; GPIO 26-32 are its flash and 33-37 its octal PSRAM, 19/20 its USB, so none of
those appear here). A board that differs says so in a JSON file on its flash, `/board.json`
by default, with only what differs, section by section:

    {"link": {"kind": "uart"}, "card": {"kind": "lfs2"}, "battery_main": {"divider": [2, 1]}}

A section in the file is merged key by key over the default section; an unknown section or
key is an error (a typo must not leave the default pin in use). The file lives on the flash,
never on the evidence card.
"""

import json

from micropython import const

# Reference wiring (GPIO numbers).
_SD_CLK = const(12)
_SD_CMD = const(11)
_SD_D0 = const(13)
_SD_D1 = const(14)
_SD_D2 = const(9)
_SD_D3 = const(10)
_BAT_MAIN = const(4)  # ADC1: ADC2 is unusable while Wi-Fi is on
_BAT_BACKUP = const(5)
_CHARGING = const(6)  # the charger's STAT output, low while charging
_BTN_RECORD = const(7)
_BTN_FUNCTION = const(15)
_LED = const(38)  # a WS2812 (the DevKitC-1 v1.1's RGB LED)
_CAM_RX = const(18)  # the encoder's UART TX
_CAM_TX = const(17)  # its command input
_CAM_ENABLE = const(16)
_CAM_SCK = const(40)
_CAM_MOSI = const(41)
_CAM_MISO = const(42)
_CAM_CS = const(1)
_CAM_READY = const(2)
_DOCK_TX = const(21)
_DOCK_RX = const(47)

PATH = "/board.json"

DEFAULTS = {
    "device": {
        "id_prefix": "",  # the device id is this + the chip's unique id in hex
    },
    "link": {
        # usb: a second USB-CDC port beside the REPL's (micropython-lib usb-device-cdc over
        # machine.USBDevice); uart: machine.UART on tx/rx; mqtt: Wi-Fi to a broker.
        "kind": "usb",
        "uart": 2,
        "tx": _DOCK_TX,
        "rx": _DOCK_RX,
        "baudrate": 921600,
        "txbuf": 4096,
        "rxbuf": 4096,
        "wifi_ssid": "",
        "wifi_password_file": "/wifi.pw",
        "mqtt": "",  # host:port
        "mqtt_ca": "",  # files on the flash, as device/mqtt.py tls_context takes them
        "mqtt_cert": "",
        "mqtt_key": "",
        "mqtt_server_name": "",
        "mqtt_user": "",
        "mqtt_password_file": "",
    },
    "card": {
        # sd: FAT on the SD card (machine.SDCard, SDMMC); lfs2: littlefs on a flash partition.
        "kind": "sd",
        "mount": "/card",  # the record store's root
        "slot": 1,
        "width": 4,
        "sck": _SD_CLK,
        "cmd": _SD_CMD,
        "data": [_SD_D0, _SD_D1, _SD_D2, _SD_D3],  # D0-D3; a 1-bit bus uses D0 only
        "freq": 40000000,
        "partition": "card",  # the lfs2 partition's label
    },
    "battery_main": {
        "pin": _BAT_MAIN,
        "divider": [2, 1],  # cell mV = pin mV * divider[0] // divider[1]
        "samples": 8,
        # (cell mV, %) from full to empty, linear between points: a Li-ion cell under load.
        "curve": [[4150, 100], [4000, 85], [3850, 65], [3750, 45], [3650, 25], [3550, 10],
                  [3400, 0]],
        "charging_pin": _CHARGING,  # -1: no charger status line
    },
    "battery_backup": {
        "pin": _BAT_BACKUP,
        "divider": [1, 1],
        "samples": 4,
        "curve": [[3000, 100], [2800, 50], [2500, 10], [2000, 0]],  # a CR/LiMn coin cell
        "charging_pin": -1,
    },
    "buttons": {
        # pin: [short press, long press] (the long one may be ""); pressed pulls the pin low.
        "pins": {str(_BTN_RECORD): ["record", "stop"], str(_BTN_FUNCTION): ["bookmark", "notice"]},
        "debounce_ms": 30,
        "long_ms": 1500,
    },
    "indicator": {
        "kind": "neopixel",  # or "pin": an LED lit in the states listed in "lit"
        "pin": _LED,
        "lit": ["recording", "refused", "battery_low", "storage_full"],
    },
    "camera": {
        # The external A/V encoder (the integration point: hal.py StreamCamera/SpiCamera).
        # uart: its encoded stream on a UART; spi: this MCU clocks out blocks the encoder
        # flags ready on a pin; i2s: its stream on an I2S bus.
        "kind": "uart",
        "tracks": ["audio", "video"],
        "bus": 1,
        "baudrate": 4000000,
        "rx": _CAM_RX,
        "tx": _CAM_TX,
        "rxbuf": 32768,
        "enable": _CAM_ENABLE,  # driven high while recording; -1: always on
        "sck": _CAM_SCK,
        "mosi": _CAM_MOSI,
        "miso": _CAM_MISO,
        "cs": _CAM_CS,
        "ready": _CAM_READY,
        "freq": 20000000,
        "block": 4096,  # bytes per ready edge (spi)
        "ws": _CAM_TX,  # i2s word select and data pins
        "sd": _CAM_RX,
        "rate": 48000,
        "chunk_ms": 200,  # read_into returns after this long at most
        "stall_ms": 2000,  # no bytes for this long: a self-test fault
    },
    "watchdog": {
        "timeout_ms": 60000,  # 0: no watchdog (bench only); once started it cannot be stopped
    },
    "nvs": {
        "namespace": "bodycam",
    },
}


def merge(defaults: dict, overrides: dict) -> dict:
    """The defaults with the overrides' sections merged over them, key by key."""
    out = {}
    for name, section in defaults.items():
        out[name] = dict(section)
    for name, section in overrides.items():
        if name not in out or not isinstance(section, dict):
            raise ValueError("board config: unknown section %r" % name)
        for key, value in section.items():
            if key not in out[name]:
                raise ValueError("board config: unknown key %s.%s" % (name, key))
            out[name][key] = value
    return out


def load(path: str = PATH) -> dict:
    """The board's configuration: DEFAULTS with `path` merged over it (if it exists)."""
    try:
        with open(path) as f:
            overrides = json.load(f)
    except OSError:
        overrides = {}
    return merge(DEFAULTS, overrides)
