package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/edgegw/edgegw/gateway/config"
)

// configFlags are the flags of every command that reads the config.
type configFlags struct {
	config, envFile *string
}

func addConfigFlags(fs *flag.FlagSet, config string) configFlags {
	return configFlags{
		config:  fs.String("config", config, "config file"),
		envFile: fs.String("env-file", defaultEnvFile, "KEY=VALUE file for the config's ${VAR}s, as the unit's EnvironmentFile= (skipped when the default is absent)"),
	}
}

// load reads the config, resolving ${VAR} from the environment first,
// then from the env file. offline: a command that connects to nothing
// does not need the connections' secrets.
func (c configFlags) load(offline bool) (*config.Config, error) {
	env, err := readEnvFile(*c.envFile, *c.envFile == defaultEnvFile)
	if err != nil {
		return nil, err
	}
	lookup := func(k string) (string, bool) {
		if v, ok := os.LookupEnv(k); ok {
			return v, true
		}
		v, ok := env[k]
		return v, ok
	}
	return config.LoadWith(*c.config, config.LoadOptions{Lookup: lookup, Offline: offline})
}

// readEnvFile reads a systemd EnvironmentFile: KEY=VALUE lines, # comments,
// values optionally in quotes. A missing file is no error when optional.
func readEnvFile(name string, optional bool) (map[string]string, error) {
	env := map[string]string{}
	if name == "" {
		return env, nil
	}
	data, err := os.ReadFile(name)
	if optional && errors.Is(err, os.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("env file: %w (it holds the config's secrets: run as root, e.g. with sudo, or point --env-file elsewhere)", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("env file %s:%d: not KEY=VALUE", name, i+1)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		env[k] = v
	}
	return env, nil
}
