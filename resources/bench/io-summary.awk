# resources/bench/io's summary: medians over the rounds of every (system, test, metric) in its
# lab output, printed as a table and written as STEM.json, STEM.md and STEM.svg.
# Variables: rounds, stem, name (the benchmark's), systems (the columns, flint first), params
# (JSON members for the settings).
# Input lines: RESULT SYSTEM ROUND TEST key=value... (bytes= and ops= give the CPU and exit
# metrics with cpu_ticks=, kvm_exits= and vmm_exits=, and are not metrics themselves), MODE SYSTEM ROUND direct=0|1, INFO SYSTEM ROUND
# features=... mtu=...
function median(key,    n, i, j, t, v) {
    n = count[key]
    if (n == 0) return -1
    for (i = 1; i <= n; i++) v[i] = vals[key, i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
    return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
}
function add(sys, test, metric, value,    key) {
    if (!((test, metric) in mseen)) { mseen[test, metric] = 1; metrics[test, ++nm[test]] = metric }
    key = sys SUBSEP test SUBSEP metric
    vals[key, ++count[key]] = value
}
function num(v) { return v < 0 ? "null" : sprintf("%.3f", v) }
function cell(v) { return v < 0 ? "-" : (v >= 100 ? sprintf("%.0f", v) : sprintf("%.1f", v)) }
$1 == "MODE" { split($4, kv, "="); direct[$2] = kv[2] }
$1 == "INFO" && $4 ~ /^features=/ { features[$2] = substr($4, 10); mtu[$2] = substr($5, 5) }
$1 == "RESULT" {
    sys = $2; test = $4; bytes = 0; ops = 0; ticks = -1; exits = -1; vmm = -1
    if (!(test in seen)) { seen[test] = 1; tests[++ntests] = test }
    for (i = 5; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "bytes") bytes = kv[2]
        else if (kv[1] == "ops") ops = kv[2]
        else if (kv[1] == "cpu_ticks") ticks = kv[2]
        else if (kv[1] == "kvm_exits") exits = kv[2]
        else if (kv[1] == "vmm_exits") vmm = kv[2]
        else if (kv[1] != "secs") add(sys, test, kv[1], kv[2])
    }
    # USER_HZ is 100: a tick is 10 ms. Per GiB where bytes are moved, else per operation.
    if (ticks >= 0 && bytes > 0) add(sys, test, "cpu_s_per_gib", ticks / 100 / (bytes / 1073741824))
    else if (ticks >= 0 && ops > 0) add(sys, test, "cpu_us_per_op", ticks * 10000 / ops)
    # KVM exits (a container has none) per request, or per MiB for a stream.
    per = ops > 0 ? ops : bytes / 1048576
    unit = ops > 0 ? "op" : "mib"
    if (exits >= 0 && per > 0) add(sys, test, "exits_per_" unit, exits / per)
    if (vmm >= 0 && per > 0) add(sys, test, "vmm_exits_per_" unit, vmm / per)
}
END {
    n = split(systems, col, " ")
    json = stem ".json"; md = stem ".md"; svg = stem ".svg"
    where = "lab: QEMU/TCG with nested KVM (software emulation, not hardware timings)"

    printf "%-18s %-14s", "test", "metric"
    for (i = 1; i <= n; i++) printf " %10s", col[i]
    for (i = 2; i <= n; i++) printf " %11s", "flint/" col[i]
    printf "\n"

    printf "# %s: flint vs QEMU microvm vs a crun container\n\n", name > md
    printf "Medians over %d round(s), %s.\n\n| test | metric |", rounds, where > md
    for (i = 1; i <= n; i++) printf " %s |", col[i] > md
    for (i = 2; i <= n; i++) printf " flint/%s |", col[i] > md
    printf "\n|---|---|" > md
    for (i = 2; i <= 2 * n; i++) printf "---:|" > md
    printf "\n" > md

    printf "{\n  \"benchmark\": \"%s\",\n  \"where\": \"%s\",\n  \"rounds\": %d,\n  \"statistic\": \"median\",\n  %s,\n  \"systems\": {", name, where, rounds, params > json
    for (i = 1; i <= n; i++) {
        s = col[i]
        printf "%s\n    \"%s\": {", (i > 1 ? "," : ""), s >> json
        sep = ""
        if (s in direct) { printf "\"o_direct\": %s", (direct[s] == "1" ? "true" : "false") >> json; sep = ", " }
        # A VM's virtio-net feature bits (from bit 0), or what a container's link is.
        if (s in features) printf "%s\"%s\": \"%s\", \"mtu\": %d", sep, (features[s] ~ /^[01]+$/ ? "virtio_net_features" : "link"), features[s], mtu[s] >> json
        printf "}" >> json
    }
    printf "\n  },\n  \"results\": [\n" >> json

    first = 1; rows = 0
    for (t = 1; t <= ntests; t++) {
        test = tests[t]
        for (m = 1; m <= nm[test]; m++) {
            metric = metrics[test, m]
            printf "%-18s %-14s", test, metric
            printf "| %s | %s |", test, metric >> md
            line = sprintf("    {\"test\": \"%s\", \"metric\": \"%s\"", test, metric)
            for (i = 1; i <= n; i++) {
                v[i] = median(col[i] SUBSEP test SUBSEP metric)
                printf " %10s", cell(v[i])
                printf " %s |", cell(v[i]) >> md
                line = line sprintf(", \"%s\": %s", col[i], num(v[i]))
            }
            for (i = 2; i <= n; i++) {
                r = (v[1] >= 0 && v[i] > 0) ? v[1] / v[i] : -1
                printf " %11s", (r < 0 ? "-" : sprintf("%.2f", r))
                printf " %s |", (r < 0 ? "-" : sprintf("%.2f", r)) >> md
                line = line sprintf(", \"flint_over_%s\": %s", col[i], num(r))
            }
            printf "\n"
            printf "\n" >> md
            printf "%s%s}", (first ? "" : ",\n"), line >> json
            first = 0
            # The chart's rows: each test's throughput (or round trips per second).
            if (metric == "mib_s" || metric == "rr_s") {
                rows++; rtest[rows] = test; rmetric[rows] = metric
                for (i = 1; i <= n; i++) rv[rows, i] = v[i]
            }
        }
    }
    printf "\n  ]\n}\n" >> json
    printf "\nmib_s, iops, rr_s: higher is better; lat_*_us and cpu_*: lower is better. cpu_* is the lab's busy CPU time per GiB moved or per operation (both ends of a network test).\n" >> md

    # The chart: per test, a bar per system on a log scale (the systems differ a hundredfold).
    left = 190; width = 520; bar = 14; gap = 6
    rowh = n * (bar + 2) + gap * 2
    height = 70 + rows * rowh + 20 * n
    lo = 1e18; hi = 0
    for (r = 1; r <= rows; r++) for (i = 1; i <= n; i++) if (rv[r, i] > 0) {
        if (rv[r, i] < lo) lo = rv[r, i]
        if (rv[r, i] > hi) hi = rv[r, i]
    }
    if (hi <= 0) { lo = 1; hi = 10 }
    llo = log(lo / 2) / log(10); lhi = log(hi) / log(10)
    if (lhi <= llo) lhi = llo + 1
    split("#d9480f #1971c2 #2f9e44 #7048e8 #868e96", colour, " ")
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", left + width + 90, height > svg
    printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n" >> svg
    printf "<text x=\"10\" y=\"22\" font-size=\"15\">%s: throughput per system (MiB/s; round trips/s for rr), log scale</text>\n", name >> svg
    printf "<text x=\"10\" y=\"40\" fill=\"#555\">medians of %d round(s); %s</text>\n", rounds, where >> svg
    y = 60
    for (r = 1; r <= rows; r++) {
        printf "<text x=\"10\" y=\"%d\">%s (%s)</text>\n", y + rowh / 2, rtest[r], (rmetric[r] == "rr_s" ? "rr/s" : "MiB/s") >> svg
        yy = y + gap
        for (i = 1; i <= n; i++) {
            val = rv[r, i]
            w = val > 0 ? (log(val) / log(10) - llo) / (lhi - llo) * width : 0
            if (w < 1) w = 1
            printf "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", left, yy, w, bar, colour[(i - 1) % 5 + 1] >> svg
            printf "<text x=\"%.1f\" y=\"%d\">%s</text>\n", left + w + 4, yy + bar - 3, cell(val) >> svg
            yy += bar + 2
        }
        y += rowh
    }
    for (i = 1; i <= n; i++) {
        printf "<rect x=\"10\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", y + 10 + (i - 1) * 20, colour[(i - 1) % 5 + 1] >> svg
        printf "<text x=\"28\" y=\"%d\">%s</text>\n", y + 20 + (i - 1) * 20, col[i] >> svg
    }
    printf "</svg>\n" >> svg
}
