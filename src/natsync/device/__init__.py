"""What a phone needs to be set up: an iOS configuration profile, the settings for Android."""
