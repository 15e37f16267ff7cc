#!/bin/sh
echo "$NAME is your uncle."
