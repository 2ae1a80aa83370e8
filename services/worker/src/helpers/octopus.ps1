# Octopus's PowerShell script helpers, defined before a step's script runs (see variables.rs).
# Names and values arrive as base64 (UTF-8), so no quote or character in them can end a string.
function __CuttleDecode([string]$Text) {
  [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($Text))
}
function __CuttleEncode([string]$Text) {
  [System.Convert]::ToBase64String([System.Text.Encoding]::UTF8.GetBytes($Text))
}
function __CuttleLine([string]$Text) {
  [Console]::Out.WriteLine($Text)
  [Console]::Out.Flush()
}
$OctopusParameters = New-Object 'System.Collections.Generic.Dictionary[string,string]' ([System.StringComparer]::OrdinalIgnoreCase)
@VARIABLES@
function Set-OctopusVariable {
  param(
    [Parameter(Mandatory = $true, Position = 0)][string]$Name,
    [Parameter(Position = 1)][AllowEmptyString()][AllowNull()][string]$Value = '',
    [switch]$Sensitive
  )
  $extra = ''
  if ($Sensitive) { $extra = " sensitive='$(__CuttleEncode 'True')'" }
  __CuttleLine "##octopus[setVariable name='$(__CuttleEncode $Name)' value='$(__CuttleEncode $Value)'$extra]"
}
function Fail-Step {
  param([Parameter(Position = 0)][string]$Message)
  if ($Message) { __CuttleLine "##octopus[resultMessage message='$(__CuttleEncode $Message)']" }
  exit 1
}
function __CuttleWrite([string]$Category, [string]$Message) {
  __CuttleLine "##octopus[stdout-$Category]"
  __CuttleLine $Message
  __CuttleLine '##octopus[stdout-default]'
}
function Write-Highlight {
  [CmdletBinding()]
  param([Parameter(Position = 0, ValueFromPipeline = $true)][string]$Message)
  process { __CuttleWrite 'highlight' $Message }
}
function Write-Wait {
  [CmdletBinding()]
  param([Parameter(Position = 0, ValueFromPipeline = $true)][string]$Message)
  process { __CuttleWrite 'wait' $Message }
}
function Write-Verbose {
  [CmdletBinding()]
  param([Parameter(Position = 0, ValueFromPipeline = $true)][string]$Message)
  process { __CuttleWrite 'verbose' $Message }
}
function Write-Warning {
  [CmdletBinding()]
  param([Parameter(Position = 0, ValueFromPipeline = $true)][string]$Message)
  process { __CuttleWrite 'warning' $Message }
}
function New-OctopusArtifact {
  param(
    [Parameter(Mandatory = $true, Position = 0)][string]$Path,
    [Parameter(Position = 1)][string]$Name
  )
  $full = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Path)
  if (-not $Name) { $Name = [System.IO.Path]::GetFileName($full) }
  __CuttleLine "##octopus[createArtifact path='$(__CuttleEncode $full)' name='$(__CuttleEncode $Name)']"
}
