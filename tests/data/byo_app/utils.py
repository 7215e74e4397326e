"""Helpers of the demo app: read a dataset folder, fetch, decrypt, encrypt and upload files.

An encrypted file is nonce (12 bytes) | ciphertext | tag (16 bytes), AES-256-GCM, no associated
data. A dataset folder holds credentials.bin (JSON: "query_string" is the base64 of the presigned
URL's query string, "encryption"/"key" the key as 64 hex characters) and location.txt (the URL
without its query string).
"""

import base64
import json
import os

import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12


def read_dataset(folder):
    """Return (url, key) of the dataset described in ``folder``."""
    with open(os.path.join(folder, "credentials.bin"), "rb") as fh:
        credentials = json.loads(fh.read().decode("utf-8"))
    with open(os.path.join(folder, "location.txt"), encoding="utf-8") as fh:
        location = fh.read().strip()
    query = base64.b64decode(credentials["query_string"]).decode("utf-8")
    key = bytes.fromhex(credentials["encryption"]["key"])
    return location + "?" + query, key


def download(url):
    response = requests.get(url, timeout=300)
    response.raise_for_status()
    return response.content


def upload(url, data):
    response = requests.put(url, data=data, timeout=300)
    response.raise_for_status()


def decrypt(key, data):
    return AESGCM(key).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], None)


def encrypt(key, data):
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, data, None)
