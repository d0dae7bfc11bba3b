/* Subcommands of the fedc program. Each takes the arguments after its own
 * name (argv[0] is the subcommand name) and returns the process exit code. */
#ifndef FEDC_TOOLS_COMMANDS_H
#define FEDC_TOOLS_COMMANDS_H

int fedc_cmd_server(int argc, char **argv);
int fedc_cmd_client(int argc, char **argv);
int fedc_cmd_partition(int argc, char **argv);
int fedc_cmd_sim(int argc, char **argv);
int fedc_cmd_privacy(int argc, char **argv);
int fedc_cmd_certs(int argc, char **argv);
int fedc_cmd_keygen(int argc, char **argv);

#endif
