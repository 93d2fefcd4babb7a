-- pause: ARGV[4] '1' to pause, '0' to resume. Answers {'ok'} or {'absent'}.

if not open_shard() then return {'absent'} end
init_now()
if M.paused == '1' and ARGV[4] ~= '1' then WOKE = true end
SET.paused = ARGV[4]
flush()
return {'ok'}
