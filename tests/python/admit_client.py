#!/usr/bin/env python3
"""A browser's visit to edge's admission endpoint, from a chosen source address, with Python's
own HTTP client (http.client, ssl). Does not follow the redirect. Prints one JSON object:
{"status": N, "location": "...", "body": "..."}.

Usage: admit_client.py SOURCE URL [--ca FILE] [--cookie NAME=VALUE] [--bearer TOKEN]
"""
import argparse
import http.client
import json
import ssl
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("url")
parser.add_argument("--ca")
parser.add_argument("--cookie")
parser.add_argument("--bearer")
args = parser.parse_args()

url = urllib.parse.urlsplit(args.url)
if url.scheme == "https":
    context = ssl.create_default_context(cafile=args.ca)
    conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=5,
                                       source_address=(args.source, 0), context=context)
else:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5,
                                      source_address=(args.source, 0))
headers = {}
if args.cookie:
    headers["Cookie"] = args.cookie
if args.bearer:
    headers["Authorization"] = "Bearer " + args.bearer
path = url.path + ("?" + url.query if url.query else "")
conn.request("GET", path, headers=headers)
response = conn.getresponse()
print(json.dumps({
    "status": response.status,
    "location": response.getheader("Location") or "",
    "body": response.read().decode(errors="replace").strip(),
}))
