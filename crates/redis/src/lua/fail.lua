-- fail: ARGV[4..] five values per failure: tid, fence, error, decision ('b' backoff, 'a'..ms
-- retry after, 'n' never), random draw in [0, 1) for jitter. Answers {'ok', code, value, ...}:
-- code 0 retrying at value, code 5 dead with reason value, or check()'s refusal.

open_shard()
init_now()
local tids = {}
for i = 4, #ARGV, 5 do tids[#tids + 1] = ARGV[i] end
preload(tids)
local out = {'ok'}
for i = 4, #ARGV, 5 do
  local tid, decision = ARGV[i], ARGV[i + 3]
  local t = R[tid]
  local code, value = check(t, tonumber(ARGV[i + 1]))
  if code == 0 then
    t.er = ARGV[i + 2]
    local reason, run_at = nil, nil
    if decision == 'n' then
      reason = R_PERMANENT
    elseif t.at >= max_attempts(t.rt) then
      reason = R_MAX
    elseif string.sub(decision, 1, 1) == 'a' then
      run_at = NOW + tonumber(string.sub(decision, 2))
    else
      run_at = NOW + backoff_ms(t.rt, t.at, tonumber(ARGV[i + 4]))
    end
    redis.call('ZREM', K_LEASE, tid)
    t.le = -1
    t.wk = false
    bump('n2', -1)
    leave_active(t)
    if reason then
      bury(tid, t, reason, NOW)
      code, value = 5, reason
    else
      t.st = S_RETRY
      t.ra = run_at
      redis.call('ZADD', K_SCHED, run_at, tid)
      if t.ex >= 0 then redis.call('ZADD', K_TTL, t.ex, tid) end
      bump('n3')
      bump('retried')
      put(tid, t)
      value = run_at
    end
  end
  out[#out + 1] = code
  out[#out + 1] = value
end
retain()
flush()
return out
