-- Creates and completions mixed, spread over the clusters in BENCH_CLUSTERS (request i to cluster i mod n).
-- Each thread completes the deployments it created once they answered Running, keeping about BENCH_BACKLOG of them
-- running, so the mix settles at one completion per create.
local next_id = 0

function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
end

function init(args)
    clusters = {}
    for item in string.gmatch(os.getenv("BENCH_CLUSTERS"), "[^,]+") do table.insert(clusters, item) end
    prefix = os.getenv("BENCH_PREFIX")
    backlog = tonumber(os.getenv("BENCH_BACKLOG") or "32")
    running = {}
    head, tail = 1, 0
    sent = 0
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    if tail - head + 1 > backlog then
        local id = running[head]
        running[head] = nil
        head = head + 1
        return wrk.format("POST", "/deployments/complete/?id=" .. id, nil, nil)
    end
    local body = string.format(
        '{"name":"%s-%d-%d","cluster_id":%s,"image_path":"registry.example.com/bench/app:1.0",' ..
        '"ram_required":1,"cpu_required":1,"gpu_required":0,"priority":0}',
        prefix, tid, sent, clusters[(sent % #clusters) + 1])
    sent = sent + 1
    return wrk.format("POST", "/deployments/create/", nil, body)
end

function response(status, headers, body)
    if status < 300 and string.find(body, '"status":"Running"', 1, true) then
        local id = string.match(body, '"id":(%d+)')
        if id then
            tail = tail + 1
            running[tail] = id
        end
    end
end
