#!/bin/sh
# The hello workload: prints to both streams, writes result files under
# out/, and exits with the code in HELLO_EXIT (0 unless set).
echo "hello from $(hostname), kernel $(uname -r)"
echo "this line goes to stderr" >&2
mkdir -p out
echo "greeting=${HELLO_GREETING:-hello}" >out/greeting.txt
ls -la >out/listing.txt
exit "${HELLO_EXIT:-0}"
