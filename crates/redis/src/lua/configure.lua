-- configure: ARGV[4..10] the configuration. Creates the shard if it is missing, then applies
-- the new retention at once. Answers {'ok'}.

local exists = open_shard()
if not exists then create_shard(4) end
init_now()
local was_paused = M.paused == '1'
set_config(4)
if was_paused and M.paused ~= '1' then WOKE = true end
retain()
flush()
return {'ok'}
